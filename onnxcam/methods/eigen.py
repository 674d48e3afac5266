"""Eigen-CAM and Eigen-Grad-CAM: the first principal component of the layer, computed on the host.

An SVD per image has no standard ONNX op, so these run the explainer graph
with the layer's activations and gradients exposed and finish in numpy. The
exported explainer file therefore carries Grad-CAM, not these. Their rows in
:mod:`onnxcam.methods.table` hand ``A`` (Eigen-CAM) or ``A * G``
(Eigen-Grad-CAM) to :func:`first_component`.
"""

from __future__ import annotations

import numpy as np


def first_component(maps: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w): projection on the first right singular vector of the centred (h*w, C) matrix.

    The same centring and SVD as pytorch-grad-cam's ``get_2d_projection``
    (Muhammad & Yeasin, Eigen-CAM, IJCNN 2020).
    """
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64))
    out = np.empty((maps.shape[0], *maps.shape[2:]), np.float32)
    for i, m in enumerate(maps):
        flat = m.reshape(m.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        out[i] = (flat @ vt[0]).reshape(m.shape[1:])
    return out

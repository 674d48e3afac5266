"""Gradient-weighted CAM methods, as ONNX nodes.

Notation: ``A_k^ij`` the layer's activations (channel ``k``, position ``ij``),
``g_k^ij = dS/dA_k^ij`` the gradient of the target score ``S``, sums and means
over the spatial positions ``ij``. A channel weighting returns ``w_k`` (spatial
dims kept as 1; ``M_k = w_k A_k``), a position weighting the contribution
``M_k^ij`` itself (shaped like ``A``); the shared pipeline makes the CAM
``relu(sum_k M_k)``. Each is one row of :mod:`onnxcam.methods.table`, which
says which of the two it is. Where pytorch-grad-cam has the method, the formula (and
its epsilon) is that of its ``get_cam_weights`` / ``get_cam_image``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.graph.builder import GraphBuilder


def _f32(b: GraphBuilder, value: float) -> str:
    # The CAM head computes in float32 (build.py casts A and G).
    return b.const(value, np.float32)


def gradcam(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2).

    alpha_k = 1/Z sum_ij g_k^ij;  M_k = alpha_k A_k.
    """
    alpha = b.reduce("ReduceMean", G, list(spatial_axes), keepdims=True, hint="alpha")
    return alpha


def gradcam_plus_plus(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19 and 7), closed form with exp(S) scores.

    a_k^ij = g^2 / (2 g^2 + sum_ab A_k^ab g^3 + eps), eps = 1e-6, and a_k^ij = 0 where g = 0;
    w_k = sum_ij a_k^ij relu(g_k^ij);  M_k = w_k A_k.
    """
    axes = list(spatial_axes)
    g2 = b.op("Mul", G, G, hint="g2")
    g3 = b.op("Mul", g2, G, hint="g3")
    sum_a = b.reduce("ReduceSum", A, axes, keepdims=True, hint="sum_A")
    denom = b.op(
        "Add", b.op("Add", b.op("Mul", _f32(b, 2.0), g2), b.op("Mul", sum_a, g3)), _f32(b, 1e-6), hint="aij_denom"
    )
    aij = b.op("Div", g2, denom, hint="aij")
    aij = b.op("Where", b.op("Equal", G, _f32(b, 0.0)), _f32(b, 0.0), aij, hint="aij_nz")
    weights = b.reduce("ReduceSum", b.op("Mul", b.op("Relu", G), aij), axes, keepdims=True, hint="weights")
    return weights


def xgradcam(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 8).

    w_k = sum_ij (A_k^ij / (sum_ab A_k^ab + eps)) g_k^ij, eps = 1e-7;  M_k = w_k A_k.
    """
    axes = list(spatial_axes)
    sum_a = b.reduce("ReduceSum", A, axes, keepdims=True, hint="sum_A")
    ratio = b.op("Div", b.op("Mul", G, A), b.op("Add", sum_a, _f32(b, 1e-7)), hint="ga_norm")
    weights = b.reduce("ReduceSum", ratio, axes, keepdims=True, hint="weights")
    return weights


def hirescam(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """HiResCAM (Draelos & Carin, 2020, eq. 4): element-wise, no spatial averaging.

    M_k^ij = g_k^ij A_k^ij.
    """
    return b.op("Mul", G, A, hint="weighted")


def gradcam_elementwise(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """Element-wise Grad-CAM (pytorch-grad-cam's GradCAMElementWise; HiResCAM with a ReLU per element).

    M_k^ij = relu(g_k^ij A_k^ij).
    """
    return b.op("Relu", b.op("Mul", G, A), hint="weighted")


def layercam(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """LayerCAM (Jiang et al., IEEE TIP 2021, eq. 5-6).

    M_k^ij = relu(g_k^ij) A_k^ij.
    """
    return b.op("Mul", b.op("Relu", G), A, hint="weighted")


def counterfactual(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """Counterfactual Grad-CAM (Selvaraju et al., ICCV 2017, sec. 3): Grad-CAM of the negated gradient.

    alpha_k = 1/Z sum_ij -g_k^ij;  M_k = alpha_k A_k: the regions whose removal would raise the score.
    """
    alpha = b.reduce("ReduceMean", b.op("Neg", G), list(spatial_axes), keepdims=True, hint="alpha_neg")
    return alpha

"""From a prepared model to explanations: the explainer graph, its sessions, and everything around one run.

* :mod:`~onnxcam.explain.build`: the explainer graph (the model, the gradient tail from the score to the layers and
  the CAM head, in one ONNX graph); :mod:`~onnxcam.explain.graphs`: one such graph per target mode and output;
* :mod:`~onnxcam.explain.runner`: every graph's file and ONNX Runtime session, built once, run in chunks;
* :mod:`~onnxcam.explain.layer_choice`: ``layer="auto"`` and named layers;
* :mod:`~onnxcam.explain.inputs` and :mod:`~onnxcam.explain.targeting`: what a call feeds, checked, and its target
  turned into a graph mode and feeds;
* :mod:`~onnxcam.explain.host`: maps finished on the host (host-side methods, eigen- and augmentation smoothing);
* :mod:`~onnxcam.explain.result`: what ``explain`` and ``predict`` return.
"""

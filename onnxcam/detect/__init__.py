"""Object detectors: recognise the head, decode boxes, NMS, and the target that explains one detection.

``detector_format`` says where a graph's boxes and class scores are (YOLOv5/v8,
SSD/BlazeFace with anchors, DETR, or a graph ending in NonMaxSuppression);
``find_detections`` runs threshold and NMS on a forward pass's outputs;
``DetectionTarget`` seeds the head rows matching one box, and
``DetectionTarget.all`` explains every detection in one batched run.
"""

from onnxcam.detect.decode import blazeface_anchors, box_iou, class_confidences, decode_boxes
from onnxcam.detect.formats import KINDS, DetectorFormat, detector_format
from onnxcam.detect.head import expose_head
from onnxcam.detect.nms import Detection, find_detections, nms
from onnxcam.detect.target import DetectionTarget, DetectionTargets

__all__ = [
    "KINDS",
    "Detection",
    "DetectionTarget",
    "DetectionTargets",
    "DetectorFormat",
    "blazeface_anchors",
    "box_iou",
    "class_confidences",
    "decode_boxes",
    "detector_format",
    "expose_head",
    "find_detections",
    "nms",
]

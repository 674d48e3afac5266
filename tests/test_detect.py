"""Detection targets against torch autograd: YOLOv8n (Ultralytics' exporter), a small DETR, a BlazeFace-style head.

For each detector the reference is float64 torch on the same weights: the
score is written out independently here (decode the boxes in torch, match them
to the target box by IoU in torch, sum the class scores of the matching rows,
plus the IoU itself as the box-regression term), ``torch.autograd.grad`` of it
at the forward-hooked module output equal to the ONNX layer gives Grad-CAM,
and onnxcam's ``cam_lowres`` must match it to a relative L2 error of 1e-4.
The score's value from :meth:`DetectionTarget.resolve` must match too. The
box term's derivative comes from central differences in onnxcam and from
autograd through torch's IoU here, so the two are independent.

Set ``ONNXCAM_ZOO_CACHE=<dir>`` to keep the exported files between runs.
"""

from __future__ import annotations

import importlib.util

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import onnxcam
from model_zoo.target_models import CASES, build_and_export, build_model
from onnxcam.detect import DetectionTarget, DetectorFormat, detector_format, expose_head, find_detections
from onnxcam.detect.decode import box_to_image
from onnxcam.errors import TargetError
from onnxcam.preprocess.geometry import plan_geometry, point_to_image
from tests.test_targets_zoo import _layer_value, _rel, torch_layer_activation_and_gradient

REL_TOL = 1e-4


def torch_layer_gradient(module, forward, feeds: dict, activation: np.ndarray, score) -> np.ndarray:
    """float64 d score / d (the forward-hooked module output equal to ``activation``), by torch autograd."""
    return torch_layer_activation_and_gradient(module, forward, feeds, activation, score)[1].detach().numpy()


def assert_same_gradient(ours: np.ndarray, reference: np.ndarray) -> None:
    """Relative L2 error below REL_TOL, on a gradient that is not zero."""
    assert np.abs(reference).max() > 0, "the reference gradient is zero"
    assert _rel(ours, reference) < REL_TOL, f"relative L2 error {_rel(ours, reference):.2e}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = os.environ.get("ONNXCAM_ZOO_CACHE")
    return Path(folder) if folder else tmp_path_factory.mktemp("detect_zoo")


@pytest.fixture(scope="module")
def yolo(cache):
    if importlib.util.find_spec("ultralytics") is None:  # not imported here: see model_zoo.detector_models.yolov8n
        pytest.skip("ultralytics is not installed (pip install -e '.[test]')")
    from model_zoo.detector_models import yolov8n

    path, module = yolov8n(cache, imgsz=160)
    return path, module, onnxcam.Explainer(path, method="eigengradcam")  # a host-side method returns the gradient


def _torch_iou(box, boxes):
    """IoU of one xyxy box (constants) with torch boxes (N, 4), differentiable in the boxes."""
    ix = (torch.minimum(boxes[:, 2], box[2]) - torch.maximum(boxes[:, 0], box[0])).clamp(min=0)
    iy = (torch.minimum(boxes[:, 3], box[3]) - torch.maximum(boxes[:, 1], box[1])).clamp(min=0)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def _cxcywh(t):
    return torch.stack([t[:, 0] - t[:, 2] / 2, t[:, 1] - t[:, 3] / 2, t[:, 0] + t[:, 2] / 2, t[:, 1] + t[:, 3] / 2], 1)


def _images(shape, seed=3):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_building_yolov8n_leaves_pillow_as_it_was(yolo):
    """Ultralytics patches PIL.Image.open process-wide (a pip install of a HEIF plugin on unknown files): undone."""
    from PIL import Image

    assert Image.open.__module__ == "PIL.Image"


def test_yolov8_is_recognised_from_ultralytics_metadata(yolo):
    path, _, ex = yolo
    fmt = detector_format(ex.index)
    assert (fmt.kind, fmt.classes, fmt.scores) == ("yolov8", 80, "output0")
    assert "Ultralytics" in fmt.reason


@pytest.mark.parametrize("box_weight", [0.0, 1.0])
def test_yolov8_detection_target_matches_autograd(yolo, box_weight):
    path, module, ex = yolo
    x = _images((1, 3, 160, 160))
    pred = ex.predict(x)
    fmt = detector_format(ex.index)
    (dets,) = find_detections(fmt, pred.outputs, (160, 160), conf=0.0, max_det=5)
    det = dets[0]
    # a box near the detection, not on it: at IoU = 1 the IoU has a kink (min and max switch), where the
    # derivative is one-sided in torch and the average of both sides in central differences
    near = (det.box[0] + 1.5, det.box[1] - 1.0, det.box[2] + 0.5, det.box[3] - 2.0)
    target = DetectionTarget(near, det.class_id, iou=0.5, box_weight=box_weight)
    res = ex.explain(x, target)
    layer = _layer_value(path, {"images": x}, res.layer)
    box = torch.tensor(near, dtype=torch.float64)

    def score(outs):
        y = (outs[0] if isinstance(outs, (tuple, list)) else outs)[0]  # (84, anchors)
        boxes = _cxcywh(y[:4].T)
        iou = _torch_iou(box, boxes)
        rows = torch.nonzero(iou.detach() >= 0.5)[:, 0]
        assert len(rows) >= 1
        return y[4 + det.class_id, rows].sum() + box_weight * iou[rows].sum()

    ref = torch_layer_gradient(module, lambda m, img: m(img), {"images": x}, layer, score)
    assert_same_gradient(res.gradients, ref)
    with torch.no_grad():
        expected = float(score(module.double()(torch.tensor(x, dtype=torch.float64))))
    shape = tuple(pred.scores.shape[1:])
    _, value = target.resolve(fmt, ex.score_spec, pred.outputs, (160, 160), shape, scored=pred.scores)
    assert value == pytest.approx(expected, rel=1e-4)


def test_all_detections_in_one_batched_run_equal_one_by_one(yolo):
    path, _, ex = yolo
    x = _images((2, 3, 160, 160), seed=5)
    fmt = detector_format(ex.index)
    found = find_detections(fmt, ex.predict(x).outputs, (160, 160), conf=0.0, max_det=2)
    flat = [d for per_image in found for d in per_image]
    res = ex.explain(x, DetectionTarget.all(flat))
    assert list(res.image_index) == [0, 0, 1, 1]
    for row, det in enumerate(flat):
        one = ex.explain(x[det.image : det.image + 1], DetectionTarget(det.box, det.class_id))
        np.testing.assert_allclose(res.cam_lowres[row], one.cam_lowres[0], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_yolo(cache):
    from model_zoo.detector_models import tiny_yolo_anchors

    path = build_and_export("detection", cache)
    ex = onnxcam.Explainer(path, output="scores", method="eigengradcam")
    return path, detector_format(ex.index, anchors=tiny_yolo_anchors(), objectness=True), ex


def test_blazeface_style_pair_seeds_the_class_logits(tiny_yolo):
    path, fmt, ex = tiny_yolo
    assert (fmt.kind, fmt.scores, fmt.boxes, fmt.classes) == ("ssd", "scores", "boxes", 3)
    feeds = {k: v.numpy() for k, v in zip(CASES["detection"].inputs, CASES["detection"].example(1, 11))}
    pred = ex.predict(feeds)
    (dets,) = find_detections(fmt, pred.outputs, (128, 128), conf=0.0, max_det=3)
    det = dets[0]
    res = ex.explain(feeds["image"], DetectionTarget(det.box, det.class_id, iou=0.3, format=fmt))
    anchors = torch.tensor(fmt.anchors)
    box = torch.tensor(det.box, dtype=torch.float64)

    def score(outs):
        raw_boxes, probs = outs[0][0], outs[1][0]
        centre = raw_boxes[:, :2] * anchors[:, 2:] + anchors[:, :2]
        boxes = _cxcywh(torch.cat([centre, raw_boxes[:, 2:4] * anchors[:, 2:]], 1))
        rows = torch.nonzero(_torch_iou(box, boxes).detach() >= 0.3)[:, 0]
        return torch.logit(probs[rows, 1 + det.class_id]).sum()  # score="logit": the class logits

    layer = _layer_value(path, feeds, res.layer)
    ref = torch_layer_gradient(build_model("detection"), lambda m, img: m(img), feeds, layer, score)
    assert_same_gradient(res.gradients, ref)
    with pytest.raises(TargetError, match="box_weight"):
        ex.explain(feeds["image"], DetectionTarget(det.box, det.class_id, box_weight=1.0, format=fmt))


def test_ssd_without_anchors_says_what_to_pass(tiny_yolo):
    _, _, ex = tiny_yolo
    with pytest.raises(TargetError, match="anchors="):
        detector_format(ex.index)


@pytest.fixture(scope="module")
def detr(cache):
    pytest.importorskip("transformers")
    from model_zoo.detector_models import detr

    path, module = detr(cache)
    probe = onnxcam.Explainer(path, output="logits")
    layer = [c.name for c in probe.candidates if len(c.row()["shape"]) == 4 and c.row()["layout"] == "NCHW"][-1]
    return path, module, onnxcam.Explainer(path, layer=layer, output="logits", method="eigengradcam")


def test_detr_query_target_matches_autograd(detr):
    path, module, ex = detr
    x = _images((1, 3, 128, 128), seed=9) * 2 - 1
    pred = ex.predict(x)
    fmt = detector_format(ex.index)
    assert (fmt.kind, fmt.classes, fmt.activation) == ("detr", 5, "softmax")
    (dets,) = find_detections(fmt, pred.outputs, (128, 128), conf=0.0, max_det=3)
    det = dets[0]
    res = ex.explain(x, DetectionTarget(det.box, det.class_id, iou=0.5))
    box = torch.tensor(det.box, dtype=torch.float64)

    def score(outs):
        logits, boxes = outs[0][0], outs[1][0]
        rows = torch.nonzero(_torch_iou(box, _cxcywh(boxes * 128)).detach() >= 0.5)[:, 0]
        return logits[rows, det.class_id].sum()

    layer = _layer_value(path, {"pixel_values": x}, res.layer)
    ref = torch_layer_gradient(module, lambda m, img: m(img), {"pixel_values": x}, layer, score)
    assert_same_gradient(res.gradients, ref)


def nms_ending_model(path: Path) -> onnx.ModelProto:
    """TinyYolo (the model at ``path``) + Slice/Transpose + NonMaxSuppression, whose selected indices are the output."""
    model = onnx.load(str(path))
    g = model.graph
    h = onnx.helper
    g.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array([1], np.int64), "nms_one"),
            onnx.numpy_helper.from_array(np.array([4], np.int64), "nms_end"),
            onnx.numpy_helper.from_array(np.array([2], np.int64), "nms_axis"),
            onnx.numpy_helper.from_array(np.array([3], np.int64), "nms_max"),
            onnx.numpy_helper.from_array(np.array([0.5], np.float32), "nms_iou"),
            onnx.numpy_helper.from_array(np.array([0.2], np.float32), "nms_thr"),
            onnx.numpy_helper.from_array(np.array(30.0, np.float32), "nms_scale"),
        ]
    )
    g.node.extend(
        [
            h.make_node("Slice", ["scores", "nms_one", "nms_end", "nms_axis"], ["cls"]),
            h.make_node("Transpose", ["cls"], ["cls_t"], perm=[0, 2, 1]),
            h.make_node("Abs", ["boxes"], ["abs_boxes"]),  # positive widths: cx, cy, w, h in pixels
            h.make_node("Mul", ["abs_boxes", "nms_scale"], ["nms_boxes"]),
            h.make_node(
                "NonMaxSuppression",
                ["nms_boxes", "cls_t", "nms_max", "nms_iou", "nms_thr"],
                ["selected"],
                center_point_box=1,
            ),
        ]
    )
    del g.output[:]
    g.output.append(h.make_tensor_value_info("selected", onnx.TensorProto.INT64, ["k", 3]))
    return model


def test_a_graph_ending_in_nms_is_explained_through_its_raw_head(tiny_yolo, tmp_path):
    """TinyYolo + Slice/Transpose + NonMaxSuppression: the selected rows come from NMS's own output, and the seeded
    rows are the selected one and those overlapping it (iou=0.99), on NMS's score input, an inner tensor."""
    path, _, _ = tiny_yolo
    head = expose_head(nms_ending_model(path))
    ex = onnxcam.Explainer(head, output="cls_t")
    fmt = detector_format(ex.index)
    assert (fmt.kind, fmt.scores, fmt.boxes, fmt.classes) == ("nms", "cls_t", "nms_boxes", 3)
    feeds = {"image": CASES["detection"].example(2, 4)[0].numpy()}
    pred = ex.predict(feeds)
    found = find_detections(fmt, pred.outputs, (128, 128), conf=0.0)
    selected = pred.outputs["selected"]
    assert sorted((d.image, d.class_id, d.row) for ds in found for d in ds) == sorted(map(tuple, selected.tolist()))
    flat = [d for ds in found for d in ds]
    res = ex.explain(feeds, DetectionTarget.all(flat, iou=0.99))
    assert len(res.cam) == len(flat) and np.isfinite(res.cam).all()


def test_explain_detections_on_a_graph_ending_in_nms_from_the_cli(tiny_yolo, tmp_path, capsys):
    """``onnxcam explain --detections`` on the file ending in NonMaxSuppression: a panel per selected row."""
    from PIL import Image

    from onnxcam.cli.main import main

    model = tmp_path / "tiny_nms.onnx"
    onnx.save(nms_ending_model(tiny_yolo[0]), str(model))
    with pytest.raises(TargetError, match="export the model again with static shapes"):  # no "pass classes=" only
        detector_format(expose_head(onnx.load(str(model))), "nms")  # not shape-inferred: symbolic sizes
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(5).random((100, 140, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    code = main(["explain", str(model), str(photo), "--detections", "--conf", "0", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detector"].startswith("nms (3 classes") and summary["model"] == str(model)
    panels = [r["panel"] for r in summary["results"] if r.get("panel")]
    assert panels and all((out / p).is_file() for p in panels)


def test_nms_on_a_yolov8_sized_head_at_conf_0_is_bounded():
    """8400 anchors x 80 classes = 672k candidates at conf=0: only the best MAX_CANDIDATES enter NMS, which stops
    at max_det boxes (all of them, unbounded, take hours)."""
    fmt = DetectorFormat("yolov8", "output0", "output0", 80)
    head = np.random.default_rng(0).random((1, 84, 8400), dtype=np.float32)
    head[:, :2] *= 640  # centres over a 640x640 input, sizes up to 64 pixels
    head[:, 2:4] *= 64
    start = time.perf_counter()
    (found,) = find_detections(fmt, {"output0": head}, (640, 640), conf=0.0, iou=0.45, max_det=20)
    assert time.perf_counter() - start < 5
    assert len(found) == 20 and all(a.score >= b.score for a, b in zip(found, found[1:]))


def test_class_aware_nms_offsets_only_by_the_candidate_boxes():
    """A row below the threshold with a huge box does not move the class offset (an infinite one made it NaN)."""
    fmt = DetectorFormat("yolov8", "out", "out", 2)
    rows = [  # cx, cy, w, h, class 0, class 1
        (50, 50, 20, 20, 0.9, 0.0),
        (52, 50, 20, 20, 0.8, 0.0),  # overlaps the first, same class: suppressed
        (100, 100, 20, 20, 0.0, 0.7),
        (np.inf, 10, 20, 20, 0.01, 0.0),  # no candidate
    ]
    head = np.array(rows, dtype=np.float32).T[None]
    (found,) = find_detections(fmt, {"out": head}, (128, 128), conf=0.25, iou=0.45)
    assert [(d.row, d.class_id) for d in found] == [(0, 0), (2, 1)]


def test_a_shape_alone_is_a_stated_guess_and_ultralytics_metadata_of_another_task_is_refused():
    """One ``(N, 197, 768)`` output (a ViT's tokens) has a YOLOv8 head's shape: a guess, said so, never served."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["tokens"])],
        "tokens",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 197, 768])],
        [h.make_tensor_value_info("tokens", onnx.TensorProto.FLOAT, [1, 197, 768])],
    )
    model = h.make_model(graph)
    fmt = detector_format(model)
    assert (fmt.kind, fmt.classes, fmt.shape_guess) == ("yolov8", 193, True) and "a shape guess" in fmt.reason
    assert not detector_format(model, "yolov8").shape_guess  # the user said so
    onnx.helper.set_model_props(model, {"author": "Ultralytics", "task": "pose"})
    with pytest.raises(TargetError, match="task is 'pose', not 'detect'"):
        detector_format(model)
    onnx.helper.set_model_props(model, {"author": "Ultralytics", "task": "detect"})
    fmt = detector_format(model)
    assert not fmt.shape_guess and "Ultralytics" in fmt.reason


def test_boxes_map_back_through_the_letterbox():
    g = plan_geometry((300, 500), (160, 160), "letterbox")
    box = box_to_image((10.0, 40.0, 150.0, 120.0), g)
    # the letterbox scale is 160/500 = 0.32, the content starts at row (160 - 96) / 2 = 32
    assert box == pytest.approx((10 / 0.32, (40 - 32) / 0.32, 150 / 0.32, (120 - 32) / 0.32), abs=1e-6)
    # edges and pixel centres agree: the box's centre maps where point_to_image maps it
    cy, cx = point_to_image((79.5, 79.5), g)
    assert ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) == pytest.approx((cx + 0.5, cy + 0.5), abs=1e-6)


def test_bad_targets_are_refused_with_what_to_do(yolo):
    _, _, ex = yolo
    x = _images((1, 3, 160, 160))
    with pytest.raises(TargetError, match="x0 < x1"):
        ex.explain(x, DetectionTarget((5, 5, 1, 1), 0))
    with pytest.raises(TargetError, match="out of range"):
        ex.explain(x, DetectionTarget((5, 5, 50, 50), 80))
    with pytest.raises(TargetError, match="lower iou="):
        ex.explain(x, DetectionTarget((0, 0, 0.5, 0.5), 0, iou=0.99))


@pytest.fixture(scope="module")
def ssdlite(cache):
    pytest.importorskip("torchvision")
    from model_zoo.detector_models import ssdlite_head

    path, module = ssdlite_head(cache)
    ex = onnxcam.Explainer(path, output="cls_logits", method="eigengradcam")
    fmt = detector_format(
        ex.index, anchors=module.anchors(), box_scale=(10, 10, 5, 5), exp_wh=True, activation="softmax"
    )
    return path, module, fmt, ex


def test_torchvision_ssdlite_head_with_its_box_coder_matches_autograd(ssdlite):
    """torchvision's box coder (offsets / (10, 10, 5, 5), exp for sizes) in onnxcam, checked against torch's own."""
    from torchvision.models.detection._utils import BoxCoder

    path, module, fmt, ex = ssdlite
    assert (fmt.kind, fmt.classes, fmt.activation) == ("ssd", 5, "softmax")
    x = _images((1, 3, 320, 320), seed=2) * 2 - 1
    pred = ex.predict(x)
    (dets,) = find_detections(fmt, pred.outputs, (320, 320), conf=0.0, max_det=1)
    det = dets[0]
    anchors = torch.tensor(fmt.anchors)
    xyxy = torch.cat([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode_single(torch.tensor(pred.outputs["bbox_regression"][0], dtype=torch.float64), xyxy)
    np.testing.assert_allclose(det.box, decoded[det.row].numpy(), rtol=1e-6, atol=1e-4)
    res = ex.explain(x, DetectionTarget(det.box, det.class_id, iou=0.5, format=fmt))
    box = torch.tensor(det.box, dtype=torch.float64)

    def score(outs):
        boxes = coder.decode_single(outs[0][0], xyxy.to(outs[0].dtype))
        rows = torch.nonzero(_torch_iou(box, boxes).detach() >= 0.5)[:, 0]
        return outs[1][0][rows, det.class_id].sum()

    layer = _layer_value(path, {"images": x}, res.layer)
    ref = torch_layer_gradient(module, lambda m, img: m(img), {"images": x}, layer, score)
    assert_same_gradient(res.gradients, ref)


def test_a_whole_torchvision_detector_is_refused_with_what_to_export(cache):
    """Its NMS runs in If branches after thresholds and top-k: no per-anchor head reaches the outputs."""
    tv = pytest.importorskip("torchvision")
    import warnings

    path = cache / "ssdlite_whole.onnx"
    if not path.exists():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            model = tv.models.detection.ssdlite320_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=3
            )
            torch.onnx.export(model.eval(), ([torch.rand(3, 320, 320)],), str(path), dynamo=False, opset_version=17)
    with pytest.raises(TargetError, match="inside"):
        detector_format(onnx.load(str(path)))


@pytest.mark.parametrize("box_weight", [0.0, 0.5])
def test_yolov5_style_objectness_times_class_matches_autograd(cache, box_weight):
    """One (N, A, 5 + C) output: the score is objectness x class probability (not linear: the seed is its gradient)."""
    from model_zoo.detector_models import yolov5_style

    path, module = yolov5_style(cache)
    ex = onnxcam.Explainer(path, method="eigengradcam")
    fmt = detector_format(ex.index)
    assert (fmt.kind, fmt.classes, fmt.objectness_column) == ("yolov5", 3, 4)
    x = np.random.default_rng(12).standard_normal((1, 3, 128, 128)).astype(np.float32)
    pred = ex.predict(x)
    (dets,) = find_detections(fmt, pred.outputs, (128, 128), conf=0.0, max_det=1)
    det = dets[0]
    near = (det.box[0] + 0.7, det.box[1] - 0.4, det.box[2] + 0.3, det.box[3] - 0.9)
    target = DetectionTarget(near, det.class_id, iou=0.4, box_weight=box_weight)
    res = ex.explain(x, target)
    box = torch.tensor(near, dtype=torch.float64)

    def score(out):
        y = out[0]
        iou = _torch_iou(box, _cxcywh(y[:, :4]))
        rows = torch.nonzero(iou.detach() >= 0.4)[:, 0]
        return (y[rows, 4] * y[rows, 5 + det.class_id]).sum() + box_weight * iou[rows].sum()

    layer = _layer_value(path, {"image": x}, res.layer)
    ref = torch_layer_gradient(module, lambda m, img: m(img), {"image": x}, layer, score)
    assert_same_gradient(res.gradients, ref)
    with torch.no_grad():
        expected = float(score(module.double()(torch.tensor(x, dtype=torch.float64))))
    _, value = target.resolve(fmt, ex.score_spec, pred.outputs, (128, 128), pred.scores.shape[1:], scored=pred.scores)
    assert value == pytest.approx(expected, rel=1e-4)


def test_the_cli_reads_a_detector_whose_file_leaves_its_sizes_symbolic(detr, tmp_path):
    """The class count comes from the shape-inferred graph when the file's outputs only name their sizes."""
    from PIL import Image

    from onnxcam.cli.main import main
    from onnxcam.graph.index import GraphIndex

    path, _, _ = detr
    model = onnx.load(str(path))
    for output in model.graph.output:
        for k, dim in enumerate(output.type.tensor_type.shape.dim[1:]):
            dim.dim_param = f"{output.name}_{k}"
    del model.graph.value_info[:]
    symbolic = tmp_path / "detr_symbolic.onnx"
    onnx.save(model, symbolic)
    with pytest.raises(TargetError, match="static size"):
        detector_format(GraphIndex(model), "detr")  # what the raw file says
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    args = ["--detections", "--detector", "detr", "--conf", "0", "--max-det", "1", "--preprocess", "raw01"]
    assert main(["explain", str(symbolic), str(tmp_path / "grey.png"), *args, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "grey.png.det1.cam.png").exists()

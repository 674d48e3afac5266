"""``onnxcam explain --detections``: run the detector, keep its detections, explain each, one panel per detection.

Per batch of images: one forward pass, boxes decoded and thresholded (NMS on
the host unless the graph runs its own, whose selected indices are then read),
then every detection of the batch explained in one run
(:meth:`~onnxcam.detect.DetectionTarget.all`). Each panel shows the detection's
box, mapped back onto the original photo through the resize, crop or letterbox
geometry, its class, confidence and heatmap; ``summary.json`` has one entry
per detection with the box in the photo's and in the model input's pixels.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxcam.cli.explain_files import (
    PANEL_SUFFIX,
    SUMMARY_NAME,
    PanelNames,
    RenderOptions,
    RunReport,
    load_batch,
    protected_paths,
    save_panel,
    write_json,
)
from onnxcam.cli.progress import Progress
from onnxcam.detect import DetectionTarget, DetectorFormat, detector_format, expose_head, find_detections
from onnxcam.detect.decode import box_to_image
from onnxcam.detect.nms import check_thresholds
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.explainer import Explainer
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.load import load_model
from onnxcam.graph.prepare import prepared_index
from onnxcam.preprocess import PreprocessSpec, cam_to_image
from onnxcam.render import format_caption, render_panel
from onnxcam.render.overlay import draw_box


def add_detection_options(p: argparse.ArgumentParser) -> None:
    det = p.add_argument_group("detectors (--detections)")
    det.add_argument(
        "--detections",
        action="store_true",
        help="the model is an object detector: explain each detection (box, class, score) in its own panel",
    )
    det.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    det.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold where the graph has no NMS (0.45)")
    det.add_argument("--max-det", type=int, default=20, help="most detections explained per image (default 20)")
    det.add_argument(
        "--detector",
        choices=["yolov8", "yolov5", "ssd", "detr", "nms"],
        help="the head's format (default: recognised from the graph and its metadata)",
    )
    det.add_argument("--anchors", metavar="FILE.npy", help="SSD-style heads: (anchors, 4) cx, cy, w, h in input pixels")
    det.add_argument(
        "--box-scale",
        type=float,
        nargs=4,
        metavar="S",
        help="SSD-style heads: the box coder's divisors for x, y, w, h (BlazeFace: 128 128 128 128; default 1)",
    )


def detection_source(model_path: str, kind: str | None, given: dict) -> tuple[object, str]:
    """What to explain (the path, or a copy exposing the raw head before NonMaxSuppression) and its scores output.

    The head's format (its class count) is read later from the Explainer's prepared, shape-inferred index: the
    raw file's may hold only symbolic sizes.
    """
    model = load_model(model_path)
    nms = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    if nms and kind in (None, "nms"):
        return expose_head(model), given.get("scores") or nms[-1].input[1]
    try:
        return model_path, detector_format(GraphIndex(model), kind, **given).scores
    except OnnxcamError:  # sizes the raw file leaves symbolic: ask the shape-inferred, probed graph
        return model_path, detector_format(prepared_index(model_path)[0], kind, **given).scores


def format_options(args: argparse.Namespace) -> dict:
    """The detector format fields the flags give (--anchors, --box-scale)."""
    given: dict = {}
    if args.anchors:
        try:
            given["anchors"] = np.load(args.anchors, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as e:
            raise OnnxcamError(f"--anchors: cannot read {args.anchors} as a .npy array ({e})") from None
    if args.box_scale:
        given["box_scale"] = tuple(float(v) for v in args.box_scale)
        if not all(np.isfinite(v) and v > 0 for v in given["box_scale"]):
            raise OnnxcamError("--box-scale takes four positive numbers")
    return given


@dataclass
class DetectionRun:
    explainer: Explainer
    spec: PreprocessSpec
    fmt: DetectorFormat
    out: Path
    render: RenderOptions
    conf: float
    iou: float
    max_det: int


def explain_detections(
    run: DetectionRun, images: list[tuple[Path, Path]], batch_size: int, max_pixels: int | None, model_path: str
) -> RunReport:
    """Explain every detection of every image; panels ``<name>.det<k>.cam.png`` and ``summary.json`` in ``out``."""
    protected = protected_paths(run.explainer, images, [run.spec.labels_file])
    protected.add([model_path], "the model reads that file")
    summary = run.out / SUMMARY_NAME
    protected.check(summary)
    report = RunReport()
    names = PanelNames(PANEL_SUFFIX)
    try:
        with Progress(len(images), "detecting") as bar:
            for start in range(0, len(images), batch_size):
                _batch(run, images[start : start + batch_size], names, protected, report, bar, max_pixels)
    except KeyboardInterrupt:
        _summary(summary, run, report, model_path, interrupted=True)
        raise KeyboardInterrupt(f"{summary} lists the {report.images_done} of {len(images)} image(s) done") from None
    _summary(summary, run, report, model_path, interrupted=False)
    return report


def _batch(run: DetectionRun, jobs, names: PanelNames, protected, report: RunReport, bar, max_pixels) -> None:
    def failed(path: Path, reason: str) -> None:
        report.failures.append({"image": str(path), "error": reason})
        report.images_done += 1
        bar.advance()

    loaded = load_batch(jobs, run.spec, max_pixels, failed)
    if not loaded:
        return
    batch = np.stack([item[3] for item in loaded])
    ex = run.explainer
    image_input = run.spec.input_name or ex.index.inputs[0]
    try:
        outputs = ex.predict({image_input: batch}).outputs
        size = (int(run.spec.size[0]), int(run.spec.size[1]))
        found = find_detections(run.fmt, outputs, size, run.conf, run.iou, run.max_det)
        flat = [d for per_image in found for d in per_image]
        res = ex.explain({image_input: batch}, DetectionTarget.all(flat, format=run.fmt)) if flat else None
    except TargetError:
        raise
    except OnnxcamError as e:
        for path, *_ in loaded:
            report.failures.append({"image": str(path), "error": str(e)})
            report.images_done += 1
            bar.advance()
        return
    row = 0
    for i, (path, rel, img, _, geometry) in enumerate(loaded):
        if not found[i]:
            report.records.append({"image": str(path), "detection": None, "note": f"no detection >= {run.conf}"})
        for k, det in enumerate(found[i], start=1):
            assert res is not None
            _panel(run, path, rel, img, geometry, det, k, res.cam[row], names, protected, report)
            row += 1
        report.images_done += 1
        bar.advance()


def _panel(run: DetectionRun, path, rel, img, geometry, det, k, cam, names, protected, report) -> None:
    labels = run.spec.labels
    name = labels[det.class_id] if labels and 0 <= det.class_id < len(labels) else None
    box = box_to_image(det.box, geometry)
    heat = cam_to_image(cam, geometry)
    layer = run.explainer.layer if isinstance(run.explainer.layer, str) else ", ".join(run.explainer.layer)
    caption = f"#{k} " + format_caption(label=name, score=det.score, layer=layer, class_id=det.class_id)
    target = run.out / names.claim(Path(rel).with_name(f"{Path(rel).name}.det{k}"))
    record = {
        "image": str(path),
        "detection": k,
        "target": det.class_id,
        "class_name": name,
        "score": det.score,
        "box": [round(v, 2) for v in box],
        "box_input": [round(v, 2) for v in det.box],
        "head_row": det.row,
        "layer": run.explainer.layer,
        "panel": None,
    }
    photo = img.convert("RGB")
    draw_box(photo, tuple(int(round(v)) for v in box), width=max(2, round(max(photo.size) / 200)))
    r = run.render
    error = (
        protected.refusal(target)
        or (None if np.isfinite(heat).all() else "its heatmap holds NaN or infinite values")
        or save_panel(target, render_panel(photo, heat, caption, r.colormap, r.alpha, contour=r.contour, box=r.box))
    )
    if error is None:
        record["panel"] = target.relative_to(run.out).as_posix()
        report.written.append(target)
    else:
        report.failures.append({"image": str(path), "error": error})
    report.records.append(record)


def _summary(path: Path, run: DetectionRun, report: RunReport, model_path: str, interrupted: bool) -> None:
    ex = run.explainer
    write_json(
        path,
        {
            "model": str(model_path),  # the user's file, not the copy exposing a NonMaxSuppression's raw head
            "layer": ex.layer,
            "layer_reason": ex.layer_reason,
            "method": ex.method,
            "detector": run.fmt.describe(),
            "detection_options": {"conf": run.conf, "iou": run.iou, "max_det": run.max_det},
            "preprocess": run.spec.describe(),
            "preprocessing": run.spec.record(),
            "interrupted": interrupted,
            "results": report.records,
            "failures": report.failures,
        },
    )
    report.written.append(path)


def run_detections(args: argparse.Namespace, finish) -> int:
    """The ``explain --detections`` command: ``finish(report, out)`` prints the outcome and gives the exit code."""
    from onnxcam.cli.explain_files import collect_images, output_folder
    from onnxcam.cli.options import explainer_and_spec, method_options, token_options

    if args.target or args.multilabel is not None or args.top != 1:
        raise OnnxcamError("--detections explains each detection's class; drop --target, --top and --multilabel")
    if len(args.layer) != 1:
        raise OnnxcamError("--detections takes one --layer")
    check_thresholds(args.conf, args.iou, args.max_det)
    images = collect_images(args.images)
    given = format_options(args)
    source, scores = detection_source(args.model, args.detector, given)
    ex, spec = explainer_and_spec(
        source,
        args,
        model_path=args.model,
        layer=args.layer[0],
        method=args.method,
        output=scores,
        **method_options(args),
        **token_options(args),
    )
    fmt = detector_format(ex.index, args.detector, **given)
    if spec.labels is not None and len(spec.labels) != fmt.classes:
        raise OnnxcamError(
            f"the labels list has {len(spec.labels)} names but the detector has {fmt.classes} classes; "
            "pass a labels file with one name per class, in class-id order"
        )
    if not images:
        raise OnnxcamError("no images found in " + ", ".join(args.images))
    out = Path(args.output)
    run = DetectionRun(ex, spec, fmt, out, _render_options(args), args.conf, args.iou, args.max_det)
    with output_folder(out):
        report = explain_detections(run, images, max(1, args.batch_size), args.max_pixels, args.model)
    return int(finish(report, out))


def _render_options(args: argparse.Namespace) -> RenderOptions:
    from onnxcam.cli.options import render_options

    return render_options(args)

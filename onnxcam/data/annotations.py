"""Read images with ground-truth boxes: onnxcam's JSON, a CSV, or Pascal VOC XML.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the original image, ``x0 <= x < x1``
(end-exclusive, 0-based: the box of a 10-pixel-wide object starting at column
0 is ``[0, y0, 10, y1]``). Labels are class ids (integers) or class names
(resolved against the model's labels); an object without a label is judged
against the model's top-1 class.

JSON (``annotations.json``; paths relative to the JSON file)::

    {"images": [
      {"file": "photos/cat.jpg", "objects": [{"box": [12, 30, 200, 180], "label": "tabby"}]},
      {"file": "photos/two.jpg", "objects": [{"box": [0, 0, 50, 40], "label": 3}, {"box": [60, 10, 90, 90]}]},
      {"file": "photos/one.png", "box": [5, 5, 40, 40], "label": 1}
    ]}

(a top-level list of image entries, and the ``"samples"`` key of
``onnxcam/demo/samples.json``, are read too). CSV (``annotations.csv``; a header
row, one row per object, rows of one file grouped)::

    file,x0,y0,x1,y1,label
    photos/cat.jpg,12,30,200,180,tabby

Pascal VOC: ``<annotation>`` XML files with ``<filename>`` and ``<object>``
(``<name>``, ``<bndbox>`` with 1-based inclusive ``xmin ymin xmax ymax``,
converted to the convention above: ``x0 = xmin - 1``, ``x1 = xmax``). Images
are looked up in ``../JPEGImages`` for files under ``Annotations/``, else
beside the XML.

One bad entry (a box that is not four numbers with ``x0 < x1``, ``y0 < y1``,
a missing file name) is reported as a :class:`DataIssue` and skipped; the
others are read.
"""

from __future__ import annotations

import csv
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from onnxcam.errors import OnnxcamError

ANNOTATION_NAMES = ("annotations.json", "boxes.json", "annotations.csv", "boxes.csv")
FORMATS = ("json", "csv", "voc")

Box = tuple[float, float, float, float]


class DataError(OnnxcamError):
    """A data set cannot be read at all (not a single bad entry: those are DataIssues)."""


@dataclass
class AnnotatedObject:
    box: Box
    label: int | str | None = None


@dataclass
class AnnotatedImage:
    image: Path
    objects: list[AnnotatedObject]
    where: str  # where the entry was read, for messages: "boxes.csv line 4"


@dataclass
class DataIssue:
    where: str
    error: str


@dataclass
class Dataset:
    source: Path
    format: str
    images: list[AnnotatedImage] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)


def parse_box(value, where: str = "box") -> Box:
    """Four finite numbers with ``0 <= x0 < x1`` and ``0 <= y0 < y1``, else a one-line OnnxcamError."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 4:
        raise OnnxcamError(f"{where} must be four numbers [x0, y0, x1, y1], got {value!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OnnxcamError(f"{where} must be four numbers [x0, y0, x1, y1], got {value!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise OnnxcamError(f"{where} has a non-finite coordinate: {value!r}")
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise OnnxcamError(
            f"{where} {[x0, y0, x1, y1]} is empty or negative; boxes are x0, y0, x1, y1 with "
            "0 <= x0 < x1 and 0 <= y0 < y1 (end-exclusive pixels)"
        )
    return (x0, y0, x1, y1)


def _label(value) -> int | str | None:
    """An int class id, a class name, or None; digit strings (from CSV) become ids."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise OnnxcamError(f"label must be a class id or name, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read DATA: an annotation file (.json, .csv, .xml) or a folder holding one (or VOC ``Annotations/``)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}; pass an annotation file (.json, .csv, VOC .xml) or a folder")
    if p.is_dir():
        return _read_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".json":
        return read_json(p)
    if suffix == ".csv":
        return read_csv(p)
    if suffix == ".xml":
        return read_voc([p], p)
    raise DataError(f"{p}: unknown annotation format {suffix!r}; use .json, .csv or Pascal VOC .xml")


def _read_folder(folder: Path) -> Dataset:
    if (folder / "Annotations").is_dir():
        return read_voc(sorted((folder / "Annotations").glob("*.xml")), folder)
    for name in ANNOTATION_NAMES:
        if (folder / name).is_file():
            return read_dataset(folder / name)
    xmls = sorted(folder.glob("*.xml"))
    if xmls:
        return read_voc(xmls, folder)
    others = sorted([*folder.glob("*.json"), *folder.glob("*.csv")])
    if len(others) == 1:
        return read_dataset(others[0])
    raise DataError(
        f"no annotations found in {folder}: expected {', '.join(ANNOTATION_NAMES)}, VOC .xml files or "
        "an Annotations/ folder (see `onnxcam eval --help`)"
    )


def _entry(ds: Dataset, base: Path, file, objects: list, where: str) -> None:
    """Validate one image entry; append it to ``ds.images`` or its problem to ``ds.issues``."""
    try:
        if not isinstance(file, str) or not file.strip():
            raise OnnxcamError(f"missing image file name (got {file!r})")
        if not objects:
            raise OnnxcamError("no boxes")
        parsed = []
        for k, obj in enumerate(objects):
            if not isinstance(obj, dict):
                raise OnnxcamError(f"object {k} must be a JSON object with a 'box', got {obj!r}")
            parsed.append(AnnotatedObject(parse_box(obj.get("box"), f"object {k} box"), _label(obj.get("label"))))
    except OnnxcamError as e:
        ds.issues.append(DataIssue(where, str(e)))
        return
    ds.images.append(AnnotatedImage(base / file, parsed, where))


def read_json(path: Path) -> Dataset:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: [[[[...
        raise DataError(f"cannot read {path} as JSON: {e}") from None
    entries = (
        doc if isinstance(doc, list) else (doc.get("images", doc.get("samples")) if isinstance(doc, dict) else None)
    )
    if not isinstance(entries, list):
        raise DataError(f'{path}: expected a list of image entries under "images" (see `onnxcam eval --help`)')
    ds = Dataset(path, "json")
    for i, entry in enumerate(entries):
        where = f"{path.name} entry {i}"
        if not isinstance(entry, dict):
            ds.issues.append(DataIssue(where, f"expected an object with 'file' and boxes, got {entry!r}"))
            continue
        objects = entry.get("objects")
        if objects is None and "box" in entry:
            objects = [{"box": entry["box"], "label": entry.get("label")}]
        _entry(
            ds, path.parent, entry.get("file", entry.get("image")), objects if isinstance(objects, list) else [], where
        )
    return ds


def read_csv(path: Path) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} as CSV: {e}") from None
    needed = {"file", "x0", "y0", "x1", "y1"}
    if not rows or not needed <= set(rows[0]):
        raise DataError(f"{path}: expected a header row with columns file,x0,y0,x1,y1[,label]")
    grouped: dict[str, list[tuple[int, dict]]] = {}
    for line, row in enumerate(rows, start=2):
        grouped.setdefault((row.get("file") or "").strip(), []).append((line, row))
    ds = Dataset(path, "csv")
    for file, items in grouped.items():
        lines = ", ".join(str(line) for line, _ in items)
        objects = [
            {"box": [row.get(k) for k in ("x0", "y0", "x1", "y1")], "label": row.get("label")} for _, row in items
        ]
        _entry(ds, path.parent, file, objects, f"{path.name} line {lines}")
    return ds


def read_voc(files: list[Path], source: Path) -> Dataset:
    ds = Dataset(source, "voc")
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except (OSError, ET.ParseError) as e:
            ds.issues.append(DataIssue(xml.name, f"cannot parse VOC XML: {e}"))
            continue
        objects = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            coords = [bb.findtext(k) if bb is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
            try:  # ValueError: a coordinate is not a number, or one is missing (too few values to unpack)
                xmin, ymin, xmax, ymax = (float(c) for c in coords if c is not None)
                # 1-based inclusive -> 0-based end-exclusive
                box: list[float] | list[str | None] = [xmin - 1, ymin - 1, xmax, ymax]
            except ValueError:
                box = coords
            objects.append({"box": box, "label": (obj.findtext("name") or "").strip() or None})
        folder = xml.parent
        if folder.name == "Annotations" and (folder.parent / "JPEGImages").is_dir():
            folder = folder.parent / "JPEGImages"
        _entry(ds, folder, (root.findtext("filename") or "").strip(), objects, xml.name)
    return ds

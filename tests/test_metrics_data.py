"""Reading images with boxes (onnxcam JSON, CSV, Pascal VOC) and carrying boxes into the model input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from onnxcam.data import box_to_input, load_samples, parse_box, read_dataset, resolve_label
from onnxcam.data.annotations import DataError
from onnxcam.errors import OnnxcamError
from onnxcam.preprocess import PreprocessSpec, plan_geometry


def write_png(path, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def test_parse_box_rejects_bad_boxes():
    assert parse_box([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
    for bad in (
        [1, 2, 3],
        [3, 2, 1, 4],
        [0, 5, 4, 5],
        [-1, 0, 2, 2],
        ["a", 0, 1, 1],
        "1,2,3,4",
        None,
        [0, 0, float("nan"), 1],
    ):
        with pytest.raises(OnnxcamError):
            parse_box(bad)


def test_json_entries_objects_single_box_and_bad_entries(tmp_path):
    doc = {
        "images": [
            {
                "file": "a.png",
                "objects": [{"box": [0, 0, 10, 10], "label": "cat"}, {"box": [5, 5, 20, 20], "label": 2}],
            },
            {"file": "b.png", "box": [1, 1, 4, 4]},
            {"file": "c.png", "box": [4, 4, 1, 1]},  # inverted: skipped
            {"objects": [{"box": [0, 0, 1, 1]}]},  # no file: skipped
            "junk",
        ]
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    ds = read_dataset(tmp_path)  # the folder: finds annotations.json
    assert ds.format == "json" and [e.image.name for e in ds.images] == ["a.png", "b.png"]
    assert ds.images[0].objects[0].label == "cat" and ds.images[0].objects[1].label == 2
    assert ds.images[1].objects[0].label is None
    assert [i.where for i in ds.issues] == [
        "annotations.json entry 2",
        "annotations.json entry 3",
        "annotations.json entry 4",
    ]


def test_csv_groups_rows_by_file(tmp_path):
    (tmp_path / "boxes.csv").write_text(
        "file,x0,y0,x1,y1,label\na.png,0,0,5,5,1\nb.png,1,1,2,2,\na.png,6,6,9,9,dog\nc.png,0,0,x,3,1\n"
    )
    ds = read_dataset(tmp_path / "boxes.csv")
    assert [(e.image.name, [o.label for o in e.objects]) for e in ds.images] == [
        ("a.png", [1, "dog"]),
        ("b.png", [None]),
    ]
    assert len(ds.issues) == 1 and "line 5" in ds.issues[0].where
    (tmp_path / "bad.csv").write_text("name,a,b\n1,2,3\n")
    with pytest.raises(DataError, match="header"):
        read_dataset(tmp_path / "bad.csv")


def test_voc_converts_one_based_inclusive_boxes(tmp_path):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (ann / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><object><name>dog</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>5</xmax>"
        "<ymax>6</ymax></bndbox></object></annotation>"
    )
    (ann / "y.xml").write_text(
        "<annotation><filename>y.jpg</filename><object><name>dog</name><bndbox>"
        "<xmin>5</xmin><ymin>1</ymin><xmax>oops</xmax><ymax>2</ymax></bndbox></object>"
        "</annotation>"
    )
    (ann / "z.xml").write_text("<annotation><filename>")
    ds = read_dataset(tmp_path)
    assert ds.format == "voc" and len(ds.images) == 1
    e = ds.images[0]
    assert e.image == tmp_path / "JPEGImages" / "x.jpg"
    assert [(o.box, o.label) for o in e.objects] == [((0.0, 0.0, 10.0, 20.0), "dog"), ((2.0, 3.0, 5.0, 6.0), "cat")]
    assert sorted(i.where for i in ds.issues) == ["y.xml", "z.xml"]


def test_unknown_data_paths_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_dataset(tmp_path / "nope.json")
    with pytest.raises(DataError, match="no annotations"):
        read_dataset(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="format"):
        read_dataset(tmp_path / "a.txt")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        read_dataset(tmp_path / "b.json")


def test_box_to_input_squash_and_crop():
    squash = plan_geometry((30, 40), (15, 10), "squash")  # x scale 0.25, y scale 0.5
    assert box_to_input((4, 2, 20, 30), squash) == (1.0, 1.0, 5.0, 15.0)
    crop = plan_geometry((20, 40), (10, 10), "crop")  # resized 10x20, crop window x 5..15
    assert box_to_input((0, 0, 8, 20), crop) is None  # entirely left of the window
    assert box_to_input((12, 0, 40, 20), crop) == (1.0, 0.0, 10.0, 10.0)


def test_resolve_label():
    names = ["cat", "Dog"]
    assert resolve_label("dog", names, 2) == 1 and resolve_label(0, names, 2) == 0
    assert resolve_label(None, names, 2) is None
    for bad, cls in (("cow", names), (2, names), ("cat", None), (-1, names)):
        with pytest.raises(OnnxcamError):
            resolve_label(bad, cls, 2)


def test_load_samples_groups_by_class_and_skips_bad_entries(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    doc = {
        "images": [
            {
                "file": "a.png",
                "objects": [
                    {"box": [0, 0, 20, 15], "label": 1},
                    {"box": [20, 15, 40, 30], "label": 0},
                    {"box": [0, 15, 10, 30], "label": 1},
                ],
            },
            {"file": "missing.png", "box": [0, 0, 5, 5], "label": 0},
            {"file": "b.png", "box": [0, 0, 50, 10], "label": 0},  # wider than the 40 px image
            {"file": "b.png", "box": [0, 0, 5, 5], "label": "zebra"},
        ]
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    spec = PreprocessSpec(size=(15, 20), preset="raw01", scale=1 / 255, mean=(0,), std=(1,))
    samples, issues = load_samples(read_dataset(tmp_path / "a.json"), spec, ["cat", "dog"], 2)
    assert [(s.name.split("/")[-1], s.label, s.boxes) for s in samples] == [
        ("a.png#1", 1, [(0.0, 0.0, 10.0, 7.5), (0.0, 7.5, 5.0, 15.0)]),
        ("a.png#0", 0, [(10.0, 7.5, 20.0, 15.0)]),
    ]
    assert samples[0].x.shape == (3, 15, 20)
    errors = " | ".join(i.error for i in issues)
    assert len(issues) == 3 and "not found" in errors and "outside" in errors and "zebra" in errors

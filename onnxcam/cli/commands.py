"""One small class per subcommand: its arguments and what it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxcam.explainer import Explainer
from onnxcam.methods import CAM_METHODS


class LayersCommand:
    name = "layers"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="list the spatial feature maps a CAM can use",
                           description="List the candidate layers of MODEL (4-D feature maps with height and width "
                                       "above 1, in graph order) and mark the one layer='auto' picks.")
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        ex = Explainer(args.model)
        rows = [{"name": c.name, "op": c.op_type, "shape": [d if isinstance(d, int) else str(d) for d in c.shape],
                 "channel_axis": c.channel_axis, "auto": c.name == ex.layer} for c in ex.candidates]
        if args.json:
            print(json.dumps({"layers": rows, "auto": ex.layer, "reason": ex.layer_reason}, indent=2))
            return 0
        shape = [("x".join(str(d) for d in r["shape"])) for r in rows]
        width = max([len(r["name"]) for r in rows] + [4])
        op_w = max([len(r["op"]) for r in rows] + [2])
        sh_w = max([len(s) for s in shape] + [5])
        print(f"  {'name':<{width}}  {'op':<{op_w}}  {'shape':<{sh_w}}  channel axis")
        for r, s in zip(rows, shape):
            mark = "*" if r["auto"] else " "
            print(f"{mark} {r['name']:<{width}}  {r['op']:<{op_w}}  {s:<{sh_w}}  {r['channel_axis']}")
        print(f"\n* {ex.layer_reason}")
        return 0


class ExportCommand:
    name = "export"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="write the standalone explainer .onnx",
                           description="Write one ONNX file computing the model's outputs plus the heatmap "
                                       "(inputs: the model's inputs and target_class; outputs: the model's "
                                       "outputs, cam, cam_lowres, target). Any ONNX runtime can serve it.")
        p.add_argument("model", help="path to the .onnx file (never modified)")
        p.add_argument("-o", "--output", required=True, help="where to write the explainer .onnx")
        p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
        p.add_argument("--method", default="gradcam", choices=sorted(CAM_METHODS), help="CAM method")
        p.add_argument("--score", default="logit", choices=["logit", "probability"],
                       help="explain the logit before a final Softmax/Sigmoid (default, as in the paper) "
                            "or the probability")
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        out = Path(args.output)
        if out.exists() and out.is_dir():
            out = out / (Path(args.model).stem + ".explainer.onnx")
        ex = Explainer(args.model, layer=args.layer, method=args.method, score=args.score)
        ex.export(out)
        print(f"wrote {out} (layer {ex.layer})", file=sys.stderr)
        return 0


COMMANDS = [LayersCommand(), ExportCommand()]


def parse_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None

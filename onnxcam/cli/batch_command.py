"""``onnxcam batch``: explain a whole data set into a resumable Parquet dataset (see :mod:`onnxcam.batch`)."""

from __future__ import annotations

import sys
from pathlib import Path

from onnxcam.cli.explain_files import check_labels, load_extra_inputs, prepare_output_dir
from onnxcam.cli.options import (
    add_method_options,
    add_render_options,
    add_model_output_option,
    add_preprocess_options,
    add_token_options,
    explainer_and_spec,
    method_options,
    model_output,
    render_options,
    token_options,
)
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS
from onnxcam.preprocess import DEFAULT_MAX_PIXELS

EPILOG = (
    "OUT/results holds one row per (image, explained class), OUT/failures one row per image skipped, as "
    "Parquet shards (schema: docs/batch.md). Rerunning the same command skips the images already in OUT; "
    "--overwrite starts over. Exit status: 0 done; 1 failed, or OUT lists images that could not be "
    "explained; 2 bad usage; 130 interrupted (the shards committed are kept)."
)


class BatchCommand:
    name = "batch"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="explain a data set into a resumable Parquet dataset",
            description="Explain every image of SOURCE (a folder, walked recursively; a text file "
            "of paths, one a line; or a CSV/Parquet table with a path column) and write "
            "the heatmaps, scores, peaks and boxes as Parquet shards in OUT, using every "
            "core. Preprocessing is found as for `onnxcam explain`.",
            epilog=EPILOG,
        )
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("source", metavar="SOURCE", help="folder, text file of paths, or .csv/.parquet table")
        p.add_argument(
            "-o",
            "--output",
            metavar="OUT",
            default="onnxcam-batch",
            help="the dataset folder (default ./onnxcam-batch)",
        )
        src = p.add_argument_group("source table")
        src.add_argument(
            "--path-column",
            default="path",
            metavar="COLUMN",
            help="the table's image-path column (default: path); relative paths are taken from the table's folder",
        )
        src.add_argument(
            "--label-column",
            metavar="COLUMN",
            help="a class-id column: explain that class for each image instead of its top classes "
            "(empty cells: the top classes)",
        )
        p.add_argument("--layer", default="auto", help="tensor or node name (default: auto; see `onnxcam layers`)")
        p.add_argument("--method", default="gradcam", choices=ALL_METHODS, help="CAM method (default gradcam)")
        add_method_options(p)
        add_token_options(p)
        which = p.add_mutually_exclusive_group()
        which.add_argument("--target", type=int, nargs="+", metavar="K", help="class id(s) to explain, every image")
        which.add_argument(
            "--top",
            type=int,
            default=1,
            metavar="K",
            help="explain each image's top K classes, one row each (default 1)",
        )
        p.add_argument(
            "--topk-scores",
            type=int,
            default=5,
            metavar="K",
            help="how many of the model's best classes and scores each row lists (default 5)",
        )
        p.add_argument(
            "--heatmaps",
            action="store_true",
            help="add each heatmap on the image's pixels as 8-bit PNG bytes (larger output)",
        )
        p.add_argument(
            "--panels",
            metavar="DIR",
            help="also write each image's PNG panel, as `onnxcam explain` draws it, in DIR (named after the image "
            "under SOURCE + .cam.png; with --engine ray on a cluster, DIR must be shared by every node)",
        )
        add_render_options(p)
        add_model_output_option(p)
        add_preprocess_options(p)
        run = p.add_argument_group("running")
        run.add_argument(
            "--engine",
            default="local",
            choices=["local", "ray"],
            help="where batches run: local (default), worker processes on this machine; ray, Ray actors on a "
            "local Ray runtime or the cluster at --address (extra: onnxcam[ray])",
        )
        run.add_argument(
            "--workers",
            type=int,
            metavar="N",
            help="worker processes (ray: actors), one Explainer each (default: cores / --threads; with "
            "--address, the cluster's CPUs / --threads); 1 runs in-process",
        )
        run.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help="ONNX Runtime threads (ray: CPUs reserved) per worker (default: cores / workers, else 1)",
        )
        run.add_argument(
            "--address",
            metavar="ADDR",
            help="ray: join this Ray cluster (e.g. auto, or HOST:6379) instead of starting a local runtime",
        )
        run.add_argument(
            "--gpus-per-worker",
            type=float,
            default=0.0,
            metavar="G",
            help="ray: GPUs each actor reserves, run with ONNX Runtime's CUDA provider (needs onnxcam[gpu])",
        )
        run.add_argument(
            "--batch-size", type=int, default=8, metavar="N", help="images per ONNX Runtime call (default 8)"
        )
        run.add_argument(
            "--shard-size",
            type=int,
            default=256,
            metavar="N",
            help="images per committed shard: what a crash can lose at most (default 256)",
        )
        run.add_argument("--overwrite", action="store_true", help="delete OUT's shards and start over")
        run.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            metavar="N",
            help=f"skip images larger than this many pixels (default {DEFAULT_MAX_PIXELS})",
        )
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        from onnxcam.batch import BatchOptions, run_batch
        from onnxcam.batch.engines import ExplainerConfig, split_cores
        from onnxcam.batch.rows import RowOptions, panels_over_inputs
        from onnxcam.batch.shards import require_pyarrow
        from onnxcam.batch.sources import check_targets, read_source

        require_pyarrow()
        ray = args.engine == "ray"
        if ray:
            from onnxcam.batch.ray_engine import require_ray

            require_ray()
        elif args.address or args.gpus_per_worker:
            raise OnnxcamError("--address and --gpus-per-worker are for --engine ray")
        if args.top < 1 or args.topk_scores < 0:
            raise OnnxcamError("--top must be at least 1 and --topk-scores at least 0")
        if args.gpus_per_worker < 0:
            raise OnnxcamError("--gpus-per-worker must be 0 or more")
        if not 0 <= args.alpha <= 1:
            raise OnnxcamError("--alpha must be between 0 and 1")
        panels = str(Path(args.panels).resolve()) if args.panels else None  # actors' working folders differ
        if panels:
            prepare_output_dir(Path(panels))
        jobs = read_source(args.source, args.path_column, args.label_column)  # before the model: the cheap error
        clash = panels_over_inputs(panels, jobs) if panels else None
        if clash:
            raise OnnxcamError(
                f"--panels {args.panels}: the panel of {clash[0].key} would be written over the input image "
                f"{clash[1]}; choose a panels folder outside the images"
            )
        workers: int | None
        if ray and args.address:  # a cluster's cores are not this machine's: one thread each unless told
            workers, threads = args.workers, split_cores(args.workers or 1, args.threads or 1)[1]
        else:
            workers, threads = split_cores(args.workers, args.threads)
        in_process = not ray and workers == 1
        options = method_options(args)
        options.pop("progress")  # a per-pass bar per worker would garble the batch's own bar
        options.update(token_options(args))
        ex, spec = explainer_and_spec(
            args.model,
            args,
            layer=args.layer,
            method=args.method,
            output=model_output(args),
            threads=threads if in_process else 1,
            **options,
        )
        options["input_size"] = ex.input_size  # a dynamic image size pinned to the one images are resized to
        # the layer auto picked, for every worker
        config = ExplainerConfig(args.model, str(ex.layer), args.method, model_output(args), threads, options)
        check_labels(spec.labels, ex)
        load_extra_inputs(ex, spec.input_name, [])  # a model with inputs besides the image: say so now
        classes = ex.num_classes
        if args.target and classes is not None and any(not 0 <= t < classes for t in args.target):
            raise OnnxcamError(f"--target: the model has {classes} classes (0..{classes - 1})")
        rows = RowOptions(
            spec,
            top=args.top,
            targets=tuple(args.target) if args.target else None,
            topk_scores=args.topk_scores,
            heatmaps=args.heatmaps,
            max_pixels=args.max_pixels,
            panels=panels,
            render=render_options(args),
        )
        batch = BatchOptions(
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            engine=args.engine,
            workers=workers,
            overwrite=args.overwrite,
            address=args.address,
            gpus_per_worker=args.gpus_per_worker,
        )
        if workers is None:  # ray on a cluster: the pool is sized once connected
            who = f"one Ray actor per {threads} of the cluster's CPUs"
        else:
            who = f"{workers} {'Ray actor' if ray else 'worker'}(s) x {threads} thread(s)"
        print(f"onnxcam batch: {len(jobs)} image(s), layer {ex.layer}, {args.method}, {who}", file=sys.stderr)
        summary = run_batch(
            config, check_targets(jobs, classes), Path(args.output), rows, batch, explainer=ex if in_process else None
        )
        print(summary.line(), file=sys.stderr)
        if summary.failed_before and not summary.failed:
            print(
                f"onnxcam: {summary.failed_before} image(s) in {Path(args.output) / 'failures'} could not be "
                "explained in an earlier run",
                file=sys.stderr,
            )
        return 1 if summary.failed or summary.failed_before else 0

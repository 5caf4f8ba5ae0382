"""The ``dymsta`` command line: parse arguments, call the engine. Nothing else lives here.

    dymsta demo [--out DIR]
    dymsta train --config FILE.yaml [--set key=value ...] [--out RUN_DIR] [--resume]
    dymsta eval RUN_DIR_OR_CHECKPOINT [--split test] [--views N] [--crops K]
    dymsta predict CHECKPOINT VIDEO [VIDEO ...] [--top-k 5] [--json] [--explain DIR]
    dymsta extract --config FILE.yaml [--set key=value ...] [--out RUN_DIR]
    dymsta export CHECKPOINT --format onnx OUT
    dymsta synth OUT [--groups N] [--clips-per-group N] [--frames N] [--size N] [--seed N]

Distributed: ``torchrun --nproc_per_node N -m dymsta train ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from dymsta import __version__

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe: a path or a shipped name (e.g. ucf101_split1)")
    _add_overrides(p, "override a config value, e.g. --set data.root=/data/UCF101 --set train.epochs=20")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")


def _add_overrides(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dymsta", description="DyMSTA-Net video action classification.")
    parser.add_argument("--version", action="version", version=f"dymsta {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthetic set -> train -> evaluate -> report -> predict, offline, on the CPU")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo recipe's epochs")

    p = sub.add_parser("train", help="train, keep the best checkpoint on validation, report on the test list")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint (or a checkpoint file) on a split")
    p.add_argument("checkpoint", help="RUN_DIR or a .safetensors checkpoint")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--views", type=int, default=None, help="temporal clips per video (default: the run's)")
    p.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: the run's)")
    _add_overrides(p, "override the stored config, e.g. --set data.root=/other/copy")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/eval-SPLIT-VIEWSxCROPS)")

    p = sub.add_parser("predict", help="class probabilities for video files")
    p.add_argument("checkpoint", help="RUN_DIR or a .safetensors checkpoint")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--views", type=int, default=1, help="temporal clips averaged per video")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--explain", default=None, metavar="DIR", help="write attention-map plots into DIR")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("extract", help="build the feature caches of a recipe (sharded under torchrun)")
    _add_config_args(p)

    p = sub.add_parser("export", help="export a checkpoint to ONNX and check it against PyTorch")
    p.add_argument("checkpoint", help="RUN_DIR or a .safetensors checkpoint")
    p.add_argument("out", help="output file (.onnx)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the model's)")
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's)")

    p = sub.add_parser("synth", help="write the synthetic temporal dataset (UCF101 layout)")
    p.add_argument("out", help="output folder")
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--clips-per-group", type=int, default=4)
    p.add_argument("--test-groups", type=int, default=3)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    return parser


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _run_dir(args: argparse.Namespace, config: Path) -> Path:
    return Path(args.out) if args.out else Path("runs") / config.stem


def cmd_train(args: argparse.Namespace) -> int:
    from dymsta.config import load_config, recipe_path
    from dymsta.engine.train import train

    config = recipe_path(args.config)
    summary = train(load_config(config, args.overrides), _run_dir(args, config), resume=args.resume)
    if "test" in summary:
        t = summary["test"]
        print(
            f"test: top-1 {t['accuracy']:.4f}  top-5 {t['top5_accuracy']:.4f}  macro F1 {t['macro_f1']:.4f}  "
            f"({t['num_videos']} videos, {t['num_skipped']} skipped)  -> {summary['run_dir']}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dymsta.engine.inference import evaluate_checkpoint
    from dymsta.reports import format_table1

    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, views=args.views, crops=args.crops, overrides=args.overrides, out=args.out
    )
    print(format_table1(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dymsta.engine.inference import predict_videos

    preds = predict_videos(
        args.checkpoint, args.videos, top_k=args.top_k, views=args.views, explain_dir=args.explain, device=args.device
    )
    if args.json:
        print(
            json.dumps(
                [
                    {"video": p.path, "top": [{"class": c, "prob": round(s, 6)} for c, s in p.top], "error": p.error}
                    for p in preds
                ],
                indent=2,
            )
        )
    else:
        for p in preds:
            if p.error:
                print(f"{p.path}: ERROR {p.error}", file=sys.stderr)
                continue
            print(p.path)
            for name, prob in p.top:
                print(f"  {prob:7.2%}  {name}")
    return 1 if any(p.error for p in preds) else 0


def cmd_extract(args: argparse.Namespace) -> int:
    from dymsta.config import load_config, recipe_path
    from dymsta.engine.train import extract_features

    config = recipe_path(args.config)
    for name, path in extract_features(load_config(config, args.overrides), _run_dir(args, config)).items():
        print(f"{name}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:

    from dymsta.engine.inference import resolve_checkpoint
    from dymsta.models import load_model
    from dymsta.models.export import check_onnx, example_inputs, export_onnx

    ckpt, _ = resolve_checkpoint(args.checkpoint)
    model, _ = load_model(ckpt)
    model.eval()
    out = export_onnx(model, args.out, num_frames=args.frames, size=args.size)
    frames = args.frames or model.cfg.num_frames
    size = args.size or model.input_size
    diff = check_onnx(model, out, example_inputs(model, batch=2, num_frames=frames, size=size))
    print(f"wrote {out}; onnxruntime vs PyTorch max |diff| = {diff:.2e}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from dymsta.data.synth import generate_synthetic

    out = generate_synthetic(
        args.out,
        groups=args.groups,
        clips_per_group=args.clips_per_group,
        test_groups=args.test_groups,
        num_frames=args.frames,
        size=args.size,
        seed=args.seed,
        progress=True,
    )
    print(f"wrote synthetic dataset to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dymsta.engine.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs)
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "extract": cmd_extract,
    "export": cmd_export,
    "synth": cmd_synth,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("dymsta: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a clear one-line error for the user; --debug shows the traceback
        if args.debug or not _is_user_error(e):
            raise
        print(f"dymsta {args.command}: error: {e}", file=sys.stderr)
        return 2


def _is_user_error(e: Exception) -> bool:
    """Errors about the user's input (files, settings), as opposed to bugs, which keep their traceback."""
    from dymsta.config import ConfigError
    from dymsta.data import DatasetError, VideoDecodeError
    from dymsta.engine.checkpoint import CheckpointError
    from dymsta.engine.loops import NonFiniteLossError
    from dymsta.models import BackboneWeightsError

    user = (
        ConfigError,
        DatasetError,
        VideoDecodeError,
        CheckpointError,
        NonFiniteLossError,
        BackboneWeightsError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
    )
    return isinstance(e, user) or (isinstance(e, ValueError) and len(str(e).splitlines()) == 1)

"""The ``dymsta`` command line: parse arguments, call the engine. Nothing else lives here.

    dymsta demo [--out DIR]
    dymsta train --config FILE.yaml [--set key=value ...] [--out RUN_DIR] [--resume]
    dymsta eval RUN_DIR_OR_CHECKPOINT [--split test] [--views N] [--crops K]
    dymsta predict MODEL INPUT [INPUT ...] [--top-k 5] [--threshold P] [--json] [--out FILE.jsonl] [--explain DIR]
    dymsta predict MODEL VIDEO --timeline [--window 2] [--stride 1] [--plot FILE.png] [--video-out FILE.mp4]
    dymsta check-videos [PATH ...] [--config FILE.yaml --set ...] [--output invalid.txt] [--json]
    dymsta labels MODEL OUT.txt|OUT.json
    dymsta extract --config FILE.yaml [--set key=value ...] [--out RUN_DIR]
    dymsta export CHECKPOINT --format onnx OUT
    dymsta serve MODEL [--host 127.0.0.1] [--port 8000] [--max-upload-mb 200] [--token TOKEN] [--workers N] [--queue N]
    dymsta synth OUT [--groups N] [--clips-per-group N] [--frames N] [--size N] [--seed N]

MODEL is a run folder, a ``.safetensors`` checkpoint or an exported ``.onnx`` file; INPUT a file, a folder (searched
recursively), a glob or ``@list.txt``. Distributed: ``torchrun --nproc_per_node N -m dymsta train|predict ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dymsta import __version__
from dymsta.hardware import set_threads

log = logging.getLogger("dymsta.cli")

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe: a path or a shipped name (e.g. ucf101_split1)")
    _add_overrides(p, "override a config value, e.g. --set data.root=/data/UCF101 --set train.epochs=20")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")


def _add_overrides(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads", type=int, default=None, help="PyTorch threads (default: one per core not busy with other work)"
    )


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
    _add_threads(p)

    p = sub.add_parser("predict", help="calibrated class probabilities (or timelines) for many video files")
    p.add_argument("checkpoint", metavar="MODEL", help="RUN_DIR, a .safetensors checkpoint or an exported .onnx")
    p.add_argument("videos", nargs="+", metavar="INPUT", help="video files, folders (recursive), globs, @list.txt")
    p.add_argument(
        "--stream",
        action="store_true",
        help="INPUT is one live source, classified as it arrives: /dev/video0, rtsp://... (any URL FFmpeg opens) "
        "or - (a container on standard input); one JSON line per window, the segments on exit",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="--stream: seconds to open, or without a frame")
    p.add_argument("--top-k", type=int, default=5, help="predictions per video (per window with --timeline: 3)")
    p.add_argument("--views", type=int, default=1, help="temporal clips averaged per video")
    p.add_argument("--threshold", type=float, default=None, metavar="P", help="label 'unknown' when the top < P")
    p.add_argument("--json", action="store_true", help="print one JSON object per video (JSON lines)")
    p.add_argument("--out", default=None, metavar="FILE.jsonl", help="write one JSON object per video to FILE")
    p.add_argument("--batch-size", type=int, default=8, help="clips per model call")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: decode in this process)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="predict videos that decode less than the run's data.min_decoded_fraction (default 0.5) of their "
        "frames, with a warning (default: an error entry, as datasets skip them)",
    )
    p.add_argument("--explain", default=None, metavar="DIR", help="write attention-map plots into DIR")
    p.add_argument("--timeline", action="store_true", help="classify sliding windows of each video")
    p.add_argument("--window", type=float, default=2.0, help="timeline window, seconds (default 2)")
    p.add_argument("--stride", type=float, default=1.0, help="timeline stride, seconds (default 1)")
    p.add_argument("--smooth", type=int, default=1, help="timeline/stream: windows averaged (centred, odd)")
    p.add_argument("--min-segment", type=float, default=0.0, help="timeline/stream: shortest segment, seconds")
    p.add_argument(
        "--switch-cost",
        type=float,
        default=2.0,
        help="timeline/stream: log-probability a change of label costs on the windows' best path (default 2, "
        "chosen on validation; 0: each window's own label)",
    )
    p.add_argument("--plot", default=None, metavar="PNG|DIR", help="timeline: class probabilities over time")
    p.add_argument("--video-out", default=None, metavar="MP4|DIR", help="timeline: the video with its label drawn")
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", default=None, help="backbone runtime: auto, torch, openvino, onnxruntime")
    p.add_argument(
        "--amp",
        default=None,
        choices=["auto", "bf16", "fp16", "none"],
        help="precision (default: the run's train.amp; auto = bf16 only where the device computes it natively)",
    )
    _add_threads(p)

    p = sub.add_parser("check-videos", help="decode every video of a folder or dataset and report broken ones")
    p.add_argument("paths", nargs="*", metavar="PATH", help="video files, folders (recursive), globs, @list.txt")
    p.add_argument("--config", default=None, help="check every video of a recipe's dataset instead")
    _add_overrides(p, "override a config value, e.g. --set data.root=/data/UCF101")
    p.add_argument("--output", default=None, metavar="invalid.txt", help="write the files that are not ok here")
    p.add_argument("--json", action="store_true", help="print one JSON object per video (JSON lines)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: decode in this process)")

    p = sub.add_parser("labels", help="write a model's label map (labels.txt or labels.json)")
    p.add_argument("checkpoint", metavar="MODEL", help="RUN_DIR, a .safetensors checkpoint or an exported .onnx")
    p.add_argument("out", help="labels.txt (one class per line) or labels.json ({name: id})")

    p = sub.add_parser("extract", help="build the feature caches of a recipe (sharded under torchrun)")
    _add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the caches' size and build time; build nothing")
    p.add_argument(
        "--videos",
        default=None,
        metavar="TRAIN,VAL,TEST",
        help="--dry-run: video counts instead of the recipe's split lists (e.g. 240000,0,20000 for Kinetics-400)",
    )

    p = sub.add_parser("export", help="export a checkpoint to ONNX and check it against PyTorch")
    p.add_argument("checkpoint", help="RUN_DIR or a .safetensors checkpoint")
    p.add_argument("out", help="output file (.onnx)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the model's)")
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's)")

    p = sub.add_parser("serve", help="an HTTP API and a web page for a model (pip install 'dymsta[serve]')")
    p.add_argument("checkpoint", metavar="MODEL", help="RUN_DIR, a .safetensors checkpoint or an exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload, MiB (default 200)")
    p.add_argument(
        "--token",
        default=os.environ.get("DYMSTA_SERVE_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /v1/* (default: $DYMSTA_SERVE_TOKEN, else none)",
    )
    p.add_argument("--workers", type=int, default=2, help="requests decoded and run at once (default 2)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait beyond those; more get 503")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request before 504 (default 120)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="answer for videos below the run's data.min_decoded_fraction of their frames too, with a warning",
    )
    p.add_argument(
        "--allow-source",
        action="append",
        default=[],
        metavar="PREFIX",
        help="let GET /v1/stream open stream URLs starting with PREFIX (repeatable; default: none, 403)",
    )
    p.add_argument("--max-streams", type=int, default=2, help="live streams at once (default 2); more get 503")
    p.add_argument("--device", default="auto")
    _add_threads(p)

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

    set_threads(args.threads or 0, what="--threads")
    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, views=args.views, crops=args.crops, overrides=args.overrides, out=args.out
    )
    print(format_table1(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dymsta.engine.predict import Predictor, expand_inputs, predict_paths

    if args.stream and len(args.videos) != 1:
        raise ValueError(f"--stream takes one source, got {len(args.videos)} inputs")
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise ValueError(f"--smooth must be an odd number of windows >= 1, got {args.smooth}")
    if args.switch_cost < 0 or args.min_segment < 0:
        raise ValueError(f"--switch-cost and --min-segment must be >= 0, got {args.switch_cost}, {args.min_segment}")
    paths = [] if args.stream else expand_inputs(args.videos)
    set_threads(args.threads or 0, what="--threads")
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, threshold=args.threshold, runtime=args.runtime, amp=args.amp
    )
    if args.stream:
        return _predict_stream(predictor, args.videos[0], args)
    show = sys.stderr.isatty() and not args.json
    if args.timeline:
        timeline = {"window": args.window, "stride": args.stride, "top_k": min(args.top_k, 3), "plot": args.plot}
        timeline.update(video_out=args.video_out, batch_size=args.batch_size)
        timeline.update(smooth=args.smooth, min_segment=args.min_segment, switch_cost=args.switch_cost)
        results = predict_paths(predictor, paths, out=args.out, timeline=timeline, show_progress=show)
    else:
        options = {"top_k": args.top_k, "views": args.views, "batch_size": args.batch_size, "show_progress": show}
        options["allow_partial"] = args.allow_partial
        workers = args.workers if len(paths) > 1 else 0
        results = predict_paths(predictor, paths, out=args.out, workers=workers, **options)
    failed = 0
    for r in results:
        failed += r["error"] is not None
        if args.json:
            print(json.dumps(r), flush=True)
        elif r["error"]:
            print(f"ERROR {r['error']}", file=sys.stderr)
        else:
            print(_format_result(r, args.threshold))
        if args.explain and not r["error"]:
            predictor.explain(r["video"], args.explain)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _predict_stream(predictor: Any, source: str, args: argparse.Namespace) -> int:
    """``predict --stream``: one JSON line per window on stdout (and ``--out``), then ``{"summary": ...}``.

    Ctrl-C (or SIGTERM) and the end of the stream stop it cleanly (exit 0); a source that fails or stalls ends it
    with a one-line error in the summary and on stderr (exit 1).
    """
    import signal

    from dymsta.engine.stream import WindowStream

    log.info("model ready; opening %s", source)  # benchmarks start feeding a pipe here
    run = WindowStream(
        predictor, source, window=args.window, stride=args.stride, top_k=min(args.top_k, 3),
        timeout=args.timeout, batch_size=args.batch_size, smooth=args.smooth, min_segment=args.min_segment,
        switch_cost=args.switch_cost,
    )  # fmt: skip
    log.info("stream %s (%s, %.3g fps): %g s windows every %g s", source, run.source.kind, run.fps, args.window,
             args.stride)  # fmt: skip
    out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115 - closed below
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        for item in run.follow():  # the windows, then the summary
            _emit(item, out)
    except KeyboardInterrupt:
        run.stopped = True
        run.reader.close()
        _emit({"summary": run.summary()}, out)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if run.error:
        print(f"dymsta predict: error: {run.error}", file=sys.stderr)
    if out is not None:
        out.close()
        print(f"wrote {args.out}", file=sys.stderr)
    code = 1 if run.error else 0
    if not run.reader.join(timeout=10.0):  # its source blocks (a pipe that stays open and silent)
        log.warning("the source %s did not end within 10 s of the stop; exiting without it", source)
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)  # skips the interpreter's exit, which would abort inside the blocked reader
    return code


def _emit(record: dict, out: Any) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _format_result(r: dict, threshold: float | None) -> str:
    """A prediction or a timeline as the lines ``dymsta predict`` prints."""
    lines = [r["video"]]
    if "segments" in r:
        lines[0] += f"  ({r['duration_s']:.1f} s, {len(r['windows'])} windows)"
        lines += [
            f"  {s['segment'][0]:7.1f} - {s['segment'][1]:7.1f} s  {s['label']} ({s['score']:.2f})"
            for s in r["segments"]
        ]
        lines += [f"  plot: {r['plot']}"] if "plot" in r else []
        lines += [f"  video: {r['video_out']}"] if "video_out" in r else []
        return "\n".join(lines)
    lines += [f"  {p['score']:7.2%}  {p['label']}" for p in r["predictions"]]
    if r["label"] == "unknown":
        lines.append(f"  -> unknown (top probability below the threshold {threshold:g})")
    return "\n".join(lines)


def cmd_check_videos(args: argparse.Namespace) -> int:
    from dymsta.config import load_config, recipe_path
    from dymsta.data.check import check_videos, dataset_paths, summarize, write_invalid_list
    from dymsta.engine.predict import expand_inputs

    if args.config:
        d = load_config(recipe_path(args.config), args.overrides).data
        paths = dataset_paths(d.kind, d.root, split=d.split, annotations=d.annotations, label_map=d.label_map)
    elif args.paths:
        paths = expand_inputs(args.paths)
    else:
        raise ValueError("give video files or folders to check, or --config RECIPE (with --set data.root=...)")
    results = []
    for r in check_videos(paths, workers=args.workers, show_progress=sys.stderr.isatty() and not args.json):
        results.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
        elif r["status"] != "ok" or r["notes"]:
            note = f"  [{', '.join(r['notes'])}]" if r["notes"] else ""
            print(f"{r['status']:<10} {r['error'] or r['video']}{note}")
    counts = summarize(results)
    notes = f"; {counts['rotated']} rotated, {counts['variable_frame_rate']} variable frame rate"
    print(
        f"checked {counts['total']} videos: {counts['ok']} ok, {counts['unreadable']} unreadable, "
        f"{counts['empty']} empty, {counts['partial']} partial{notes}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.output:
        n = write_invalid_list(args.output, results)
        print(f"wrote {n} invalid file(s) to {args.output}", file=sys.stderr)
    return 0 if counts["ok"] == counts["total"] else 1


def cmd_labels(args: argparse.Namespace) -> int:
    from dymsta.data.labels import write_label_map
    from dymsta.engine.predict import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", runtime="torch")
    write_label_map(args.out, predictor.class_names)
    print(f"wrote {len(predictor.class_names)} classes to {args.out}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from dymsta.config import load_config, recipe_path
    from dymsta.engine.train import extract_features

    config = recipe_path(args.config)
    cfg = load_config(config, args.overrides)
    if args.dry_run:
        from dymsta.engine.sizing import format_plan
        from dymsta.engine.train import plan_extract

        counts = None
        if args.videos:
            try:
                counts = dict(zip(("train", "val", "test"), (int(x) for x in args.videos.split(",")), strict=True))
            except ValueError:
                raise ValueError(f"--videos takes TRAIN,VAL,TEST counts, got {args.videos!r}") from None
        print(format_plan(plan_extract(cfg, _run_dir(args, config), counts)))
        return 0
    for name, path in extract_features(cfg, _run_dir(args, config)).items():
        print(f"{name}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dymsta.engine.predict import export_checkpoint

    out, diff = export_checkpoint(args.checkpoint, args.out, frames=args.frames, size=args.size)
    print(
        f"wrote {out} (class names, preprocessing and temperature in its metadata); "
        f"onnxruntime vs PyTorch max |diff| = {diff:.2e}"
    )
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from dymsta.serve import ServeConfig, serve
    except ImportError as e:
        print(f"dymsta serve: error: {e.name or e} is not installed: pip install 'dymsta[serve]'", file=sys.stderr)
        return 2
    config = ServeConfig(
        max_upload_mb=args.max_upload_mb,
        token=args.token or None,
        workers=args.workers,
        queue=args.queue,
        timeout_s=args.timeout,
        allow_partial=args.allow_partial,
        allowed_sources=tuple(args.allow_source),
        max_streams=args.max_streams,
    )
    serve(args.checkpoint, host=args.host, port=args.port, config=config, device=args.device, threads=args.threads)
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
    "check-videos": cmd_check_videos,
    "labels": cmd_labels,
    "extract": cmd_extract,
    "export": cmd_export,
    "serve": cmd_serve,
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
    from dymsta.engine.sizing import CacheSpaceError
    from dymsta.models import BackboneWeightsError
    from dymsta.models.export import ExportError
    from dymsta.models.factory import ModelFileError

    user = (
        ConfigError,
        DatasetError,
        VideoDecodeError,
        CheckpointError,
        NonFiniteLossError,
        BackboneWeightsError,
        ExportError,
        ModelFileError,
        CacheSpaceError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
    )
    return isinstance(e, user) or (isinstance(e, ValueError) and len(str(e).splitlines()) == 1)

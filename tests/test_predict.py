"""Batch prediction: the documented JSON fields, batches and workers that change nothing, inputs from folders,
globs and lists, bad files as entries, partial decodes as warnings, thresholds, every stream set, ONNX files that
predict what their checkpoint predicts, and torchrun shards merged in input order."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import colour_frames, write_video
from dymsta.cli import main
from dymsta.engine.predict import Predictor, expand_inputs

REPO = Path(__file__).resolve().parents[1]

# docs/predict.md, "Result of one video": field -> allowed types
RESULT_FIELDS = {
    "video": (str,),
    "label": (str, type(None)),
    "predictions": (list,),
    "frames_decoded": (int,),
    "frames_expected": (int,),
    "warnings": (list,),
    "error": (str, type(None)),
}


def check_result(r: dict, classes: list[str]) -> None:
    """A result has exactly the documented fields, of their types, and consistent values."""
    assert set(r) == set(RESULT_FIELDS), set(r) ^ set(RESULT_FIELDS)
    for key, types in RESULT_FIELDS.items():
        assert isinstance(r[key], types), (key, r[key])
    assert all(isinstance(w, str) and "\n" not in w and r["video"] in w for w in r["warnings"])
    if r["error"] is not None:
        assert r["error"].startswith(r["video"]) and "\n" not in r["error"]
        assert r["predictions"] == [] and r["label"] is None
        return
    scores = [p["score"] for p in r["predictions"]]
    assert r["predictions"] and all(set(p) == {"label", "score"} for p in r["predictions"])
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-5
    assert scores == sorted(scores, reverse=True)
    assert {p["label"] for p in r["predictions"]} <= set(classes)
    assert r["label"] in (r["predictions"][0]["label"], "unknown")
    assert 0 < r["frames_decoded"] <= r["frames_expected"]


@pytest.fixture(scope="module")
def predictor(colour_run: dict) -> Predictor:
    return Predictor.from_checkpoint(colour_run["run"], device="cpu")


def _truncated_avi(folder: Path, colour: str = "red", frames: int = 60) -> Path:
    """An FFV1 AVI cut to its first third: its header still announces every frame."""
    whole = write_video(folder / f"whole_{colour}.avi", colour_frames(colour, frames, seed=5), codec="ffv1", fps=8)
    cut = folder / f"cut_{colour}.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    return cut


def test_results_have_the_documented_fields_and_labels(colour_run: dict, predictor: Predictor) -> None:
    videos = colour_run["test_videos"]
    results = list(predictor.predict_files(videos, top_k=2, workers=0))
    assert [r["video"] for r in results] == [str(v) for v in videos]
    for r, v in zip(results, videos, strict=True):
        check_result(r, colour_run["classes"])
        assert r["label"] == v.parent.name and len(r["predictions"]) == 2  # the colour folders are the classes
        assert r["frames_decoded"] == r["frames_expected"] == 16 and r["warnings"] == []


def test_batches_and_worker_processes_change_nothing(colour_run: dict, predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    videos = [str(v) for v in colour_run["test_videos"]]
    paths = videos[:3] + [str(bad)] + videos[3:]
    one_by_one = list(predictor.predict_files(paths, top_k=3, views=2, batch_size=1, workers=0))
    batched = list(predictor.predict_files(paths, top_k=3, views=2, batch_size=5, workers=2))
    assert [r["video"] for r in batched] == paths
    for a, b in zip(one_by_one, batched, strict=True):
        assert (a["label"], a["error"]) == (b["label"], b["error"])
        for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
            assert pa["label"] == pb["label"] and pa["score"] == pytest.approx(pb["score"], abs=1e-5)
    assert batched[3]["error"] and "not a video" in batched[3]["error"]


def test_inputs_from_folders_globs_and_lists(tmp_path: Path) -> None:
    for rel in ("a/x.mp4", "a/b/y.AVI", "a/.hidden/z.mp4", "a/notes.txt", "c/w.mkv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# videos\nc/w.mkv\n\n" + str(tmp_path / "a" / "x.mp4") + "\n")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "c" / "*.mkv"), f"@{listing}", str(tmp_path / "no*.mp4")])
    assert got == [
        str(tmp_path / "a" / "b" / "y.AVI"),
        str(tmp_path / "a" / "x.mp4"),
        str(tmp_path / "c" / "w.mkv"),
        str(tmp_path / "c" / "w.mkv"),
        str(tmp_path / "a" / "x.mp4"),
        str(tmp_path / "no*.mp4"),  # kept: its result will say that nothing matches
    ]
    assert expand_inputs([str(tmp_path / "**" / "*.mkv")]) == [str(tmp_path / "c" / "w.mkv")]
    with pytest.raises(FileNotFoundError, match="list file"):
        expand_inputs([f"@{tmp_path / 'missing.txt'}"])


def test_cli_writes_jsonl_in_input_order_and_fails_on_bad_files(
    colour_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = [str(v) for v in colour_run["test_videos"][:2]]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "out" / "predictions.jsonl"
    args = ["predict", str(colour_run["run"]), good[0], str(empty), good[1], str(tmp_path / "nope*.avi")]
    assert main([*args, "--json", "--out", str(out), "--workers", "0"]) == 1
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert printed == written and [r["video"] for r in written] == [good[0], str(empty), good[1], args[-1]]
    for r in written:
        check_result(r, colour_run["classes"])
    assert "empty file" in written[1]["error"] and "no file matches" in written[3]["error"]
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporary file left behind
    assert main(["predict", str(colour_run["run"]), *good]) == 0
    table = capsys.readouterr().out
    assert good[0] in table and "%" in table


def _with_threshold(predictor: Predictor, threshold: float) -> Predictor:
    p = predictor
    return Predictor(p.runner, p.spec, p.class_names, temperature=p.temperature, threshold=threshold, model=p.model)


def test_threshold_gives_unknown(colour_run: dict, predictor: Predictor, capsys: pytest.CaptureFixture) -> None:
    video = colour_run["test_videos"][0]
    top = next(_with_threshold(predictor, 0.0).predict_files([video], workers=0))
    unknown = next(_with_threshold(predictor, 1.0).predict_files([video], workers=0))
    assert top["label"] == video.parent.name
    if unknown["predictions"][0]["score"] < 1.0:
        assert unknown["label"] == "unknown"
    assert unknown["predictions"] == top["predictions"]  # the scores stay; only the answer changes
    with pytest.raises(ValueError, match="threshold"):
        _with_threshold(predictor, 1.5)
    assert main(["predict", str(colour_run["run"]), str(video), "--threshold", "1.01"]) == 2
    assert "threshold" in capsys.readouterr().err


def test_partial_video_is_an_error_below_the_datasets_share_and_warns_when_allowed(
    predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """The datasets' rule (issue 20): below ``data.min_decoded_fraction`` (0.5) of its frames a file is an error
    entry, not a confident answer resting on a few frames; ``allow_partial`` predicts it with the warning."""
    cut = _truncated_avi(tmp_path)
    assert predictor.spec.min_decoded_fraction == 0.5
    refused = next(predictor.predict_files([cut], workers=0))
    check_result(refused, predictor.class_names)
    assert refused["label"] is None and refused["predictions"] == []
    assert "of 60 frames" in refused["error"] and "min_decoded_fraction=0.5" in refused["error"]
    assert "--allow-partial" in refused["error"]
    assert main(["predict", str(predictor.source), str(cut), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == refused["error"]
    with caplog.at_level(logging.WARNING):
        r = next(predictor.predict_files([cut], workers=0, allow_partial=True))
    check_result(r, predictor.class_names)
    assert r["frames_expected"] == 60 and r["frames_decoded"] < 30
    assert r["warnings"] == [f"{cut}: decoded {r['frames_decoded']} of 60 frames (truncated or corrupt); using those"]
    assert any("of 60 frames" in rec.getMessage() and str(cut) in rec.getMessage() for rec in caplog.records)


def test_every_bad_input_gives_a_clear_entry(predictor: Predictor, shared_data: Path, tmp_path: Path) -> None:
    edge = sorted((shared_data / "clips" / "edge").iterdir())
    text, empty = tmp_path / "text.mp4", tmp_path / "empty.avi"
    text.write_text("hello\n" * 50)
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.avi"
    truncated.write_bytes((shared_data / "clips" / "ucf101" / "v_Shotput_g05_c02.avi").read_bytes()[:30_000])
    paths = [*edge, text, empty, truncated, tmp_path, tmp_path / "missing.mp4"]
    results = {Path(r["video"]).name: r for r in predictor.predict_files(paths, workers=2)}
    for r in results.values():
        check_result(r, predictor.class_names)
    assert "28 of 50 frames" in results["corrupted.mp4"]["warnings"][0]  # 56%: above the share, predicted
    assert "2 of 130 frames" in results["cut.avi"]["error"]  # the 30 kB UCF101 file: 2%, an error
    assert "not a video" in results["text.mp4"]["error"] and "empty file" in results["empty.avi"]["error"]
    assert "folder" in results[tmp_path.name]["error"] and "not found" in results["missing.mp4"]["error"]
    for name in ("video_90.mov", "video_270.mov", "ntu_1080p_h264_in_avi.avi", "low_fps_6.mp4", "unordered.mov"):
        assert results[name]["error"] is None and results[name]["warnings"] == [], name


def _multi_stream_checkpoint(tmp_path: Path) -> Path:
    """An untrained 3-stream DyMSTA-Net (rgb, rgbdiff, mv histograms) saved as dymsta train saves one."""
    from dymsta.config import config_to_dict, load_config
    from dymsta.models import build_model, save_model

    overrides = [
        "data.num_frames=8",
        "data.size=64",
        "data.modalities=[rgb,rgbdiff,mv]",
        "data.motion.mv_encoding=hist",
        "model.dim=32",
        "model.temporal_kernels=[1,3,5]",
        "model.runtime=torch",
        "model.num_classes=3",
        "model.pretrained=false",
        "train.amp=none",
    ]
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    model = build_model(cfg.model)
    meta = {"run_config": json.dumps(config_to_dict(cfg)), "class_names": json.dumps(["x", "y", "z"])}
    path = tmp_path / "streams.safetensors"
    save_model(model, path, metadata=meta)
    return path


def test_every_stream_set_predicts_batches_timelines_and_exports(tmp_path: Path, tiny_video) -> None:
    pytest.importorskip("onnxruntime")
    ckpt = _multi_stream_checkpoint(tmp_path)
    videos = [tiny_video(f"v{i}.avi", num_frames=24, codec="mpeg4", seed=i)[0] for i in range(3)]
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert predictor.spec.modalities == ("rgb", "rgbdiff", "mv") and predictor.spec.feature_grid == (2, 2)
    single = [next(predictor.predict_files([v], workers=0)) for v in videos]
    batched = list(predictor.predict_files(videos, batch_size=3, workers=2))
    for a, b in zip(single, batched, strict=True):
        check_result(b, ["x", "y", "z"])
        assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]], abs=1e-5)
    timeline = predictor.timeline(videos[0], window=0.4, stride=0.2)
    assert timeline["error"] is None and len(timeline["windows"]) == 4  # 0.96 s: starts 0, 0.2, 0.4 and 0.56 (end)
    onnx = tmp_path / "streams.onnx"
    assert main(["export", str(ckpt), str(onnx)]) == 0
    from_onnx = list(Predictor.from_checkpoint(onnx).predict_files(videos, workers=0))
    for a, b in zip(single, from_onnx, strict=True):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]], abs=1e-4)


def test_onnx_file_carries_its_metadata_and_predicts_like_the_checkpoint(
    colour_run: dict, predictor: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    from dymsta.models.export import read_onnx_metadata

    onnx = tmp_path / "model.onnx"
    assert main(["export", str(colour_run["run"]), str(onnx)]) == 0
    assert "metadata" in capsys.readouterr().out
    meta = read_onnx_metadata(onnx)
    assert json.loads(meta["dymsta.class_names"]) == colour_run["classes"]
    assert json.loads(meta["dymsta.inputs"])["video"] == {
        "stream": "rgb",
        "layout": "B,C,T,H,W",
        "shape": ["batch", 3, 8, 64, 64],
        "dtype": "float32",
    }
    assert (meta["dymsta.num_frames"], meta["dymsta.size"], meta["dymsta.resize"]) == ("8", "64", "73")
    assert float(meta["dymsta.calibration_temperature"]) == pytest.approx(predictor.temperature)
    assert len(json.loads(meta["dymsta.mean"])) == 3 and "segments" in meta["dymsta.sampling"]
    videos = colour_run["test_videos"]
    from_onnx = list(Predictor.from_checkpoint(onnx).predict_files(videos, workers=0))
    from_ckpt = list(predictor.predict_files(videos, workers=0))
    for a, b in zip(from_ckpt, from_onnx, strict=True):
        assert a["label"] == b["label"] and [p["label"] for p in a["predictions"]] == [
            p["label"] for p in b["predictions"]
        ]
        assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]], abs=1e-4)
    assert main(["labels", str(onnx), str(tmp_path / "labels.txt")]) == 0
    assert (tmp_path / "labels.txt").read_text().split() == colour_run["classes"]
    bare = tmp_path / "bare.onnx"
    shutil.copy(onnx, bare)
    import onnx as onnx_lib

    proto = onnx_lib.load(str(bare))
    del proto.metadata_props[:]
    onnx_lib.save(proto, str(bare))
    assert main(["predict", str(bare), str(videos[0])]) == 2
    assert "no dymsta metadata" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_shards_the_files_and_merges_in_input_order(colour_run: dict, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found"
    videos = [str(v) for v in colour_run["test_videos"]]
    bad = tmp_path / "bad.mp4"
    bad.write_text("x")
    paths = [videos[0], str(bad), *videos[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp.jsonl"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "dymsta", "predict", str(colour_run["run"])]
    proc = subprocess.run([*cmd, *paths, "--out", str(out), "--workers", "0"], env=env, cwd=REPO, timeout=300)
    assert proc.returncode != 0  # one input failed
    merged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in merged] == paths
    single = tmp_path / "single.jsonl"
    assert main(["predict", str(colour_run["run"]), *paths, "--out", str(single), "--workers", "0"]) == 1
    expected = [json.loads(line) for line in single.read_text().splitlines()]
    for a, b in zip(expected, merged, strict=True):
        assert a["label"] == b["label"] and a["error"] == b["error"]
        assert np.allclose([p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]], atol=1e-5)

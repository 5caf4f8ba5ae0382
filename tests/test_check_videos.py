"""dymsta check-videos: each kind of broken or unusual file gets its status, files are never modified, worker
processes give what one process gives, and a dataset config is checked file by file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import colour_frames, write_video
from dymsta.cli import main
from dymsta.data.check import NOTES, STATUSES, check_video, check_videos, dataset_paths, summarize

FIELDS = {
    "video",
    "status",
    "notes",
    "frames_decoded",
    "frames_expected",
    "fps",
    "width",
    "height",
    "rotation",
    "error",
}


def _zoo(folder: Path, tiny_video) -> dict[str, Path]:
    """One file of every kind, keyed by the status (and note) it must get."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, _ = tiny_video("ok.mkv", num_frames=10, folder=folder)
    rotated, _ = tiny_video("rotated.mp4", codec="libx264rgb", num_frames=4, rotation=90, folder=folder)
    stamps = [0, 40, 120, 160, 240, 280, 360, 400, 480, 520]  # gaps of 40 and 80 ms in turn
    vfr, _ = tiny_video("vfr.mkv", num_frames=10, timestamps_ms=stamps, folder=folder)
    whole = write_video(folder / "whole.avi", colour_frames("red", 40, seed=3), codec="ffv1")
    cut = folder / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    text = folder / "notes.mp4"
    text.write_text("not a video\n" * 20)
    empty = folder / "empty.mkv"
    empty.write_bytes(b"")
    return {"ok": ok, "rotated": rotated, "vfr": vfr, "partial": cut, "unreadable": text, "empty": empty}


def test_each_kind_of_file_gets_its_status(tmp_path: Path, tiny_video) -> None:
    files = _zoo(tmp_path / "v", tiny_video)
    got = {name: check_video(path) for name, path in files.items()}
    for r in got.values():
        assert set(r) == FIELDS and r["status"] in STATUSES and set(r["notes"]) <= set(NOTES)
        assert (r["error"] is None) == (r["status"] == "ok")
        assert r["error"] is None or (r["error"].startswith(r["video"]) and "\n" not in r["error"])
    assert got["ok"]["status"] == "ok" and got["ok"]["notes"] == []
    assert got["ok"]["frames_decoded"] == got["ok"]["frames_expected"] == 10
    assert (
        got["rotated"]["status"] == "ok"
        and got["rotated"]["notes"] == ["rotated"]
        and got["rotated"]["rotation"] == 270
    )
    assert got["vfr"]["status"] == "ok" and got["vfr"]["notes"] == ["variable_frame_rate"]
    assert got["partial"]["status"] == "partial" and got["partial"]["frames_expected"] == 40
    assert 0 < got["partial"]["frames_decoded"] < 40
    assert f"decoded {got['partial']['frames_decoded']} of 40 frames" in got["partial"]["error"]
    assert got["unreadable"]["status"] == "unreadable" and "not a video" in got["unreadable"]["error"]
    assert got["empty"]["status"] == "empty"
    assert check_video(tmp_path / "missing.mp4")["status"] == "unreadable"


def test_files_are_never_modified_and_workers_agree(tmp_path: Path, tiny_video) -> None:
    files = list(_zoo(tmp_path / "v", tiny_video).values())
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}
    listing = sorted((tmp_path / "v").iterdir())
    inline = list(check_videos(files, workers=0))
    pooled = list(check_videos(files, workers=2))
    assert inline == pooled and [r["video"] for r in pooled] == [str(p) for p in files]
    assert {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files} == before
    assert sorted((tmp_path / "v").iterdir()) == listing  # nothing written beside them
    counts = summarize(pooled)
    assert counts == {
        "total": 6,
        "ok": 3,
        "unreadable": 1,
        "empty": 1,
        "partial": 1,
        "rotated": 1,
        "variable_frame_rate": 1,
    }


def test_cli_writes_the_invalid_list(tmp_path: Path, tiny_video, capsys: pytest.CaptureFixture) -> None:
    files = _zoo(tmp_path / "v", tiny_video)
    invalid = tmp_path / "invalid.txt"
    assert main(["check-videos", str(tmp_path / "v"), "--output", str(invalid)]) == 1
    out = capsys.readouterr().out
    assert (
        "checked 7 videos: 4 ok, 1 unreadable, 1 empty, 1 partial; 1 rotated, 1 variable frame rate" in out
    )  # + whole.avi
    assert sorted(invalid.read_text().splitlines()) == sorted(str(files[k]) for k in ("partial", "unreadable", "empty"))
    assert main(["check-videos", str(files["ok"]), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["status"] == "ok"
    assert main(["check-videos"]) == 2
    assert "--config" in capsys.readouterr().err


def test_real_edge_clips(shared_data: Path) -> None:
    results = {Path(r["video"]).name: r for r in check_videos(sorted((shared_data / "clips" / "edge").iterdir()))}
    assert results["corrupted.mp4"]["status"] == "partial"
    assert results["corrupted.mp4"]["frames_decoded"] == 28 and results["corrupted.mp4"]["frames_expected"] == 50
    for angle in (90, 180, 270):
        assert results[f"video_{angle}.mov"]["notes"] == ["rotated"]
    assert results["video_0.mov"]["notes"] == [] and results["ntu_1080p_h264_in_avi.avi"]["status"] == "ok"
    assert results["low_fps_6.mp4"]["fps"] == 6.0


def test_a_dataset_config_is_checked_file_by_file(tmp_path: Path, tiny_video, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for k in range(2):
            tiny_video(f"{cls}_{k}x.mkv", num_frames=6, folder=root / cls, seed=k)
    (root / "b" / "b_broken.mp4").write_text("x")
    assert len(dataset_paths("folder", str(root))) == 5
    args = ["check-videos", "--config", "folder", "--set", f"data.root={root}"]
    assert main(args) == 1
    assert "checked 5 videos: 4 ok, 1 unreadable" in capsys.readouterr().out
    assert main(["check-videos", "--config", "folder"]) == 2
    assert "data.root" in capsys.readouterr().err

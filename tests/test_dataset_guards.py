"""Guards on data: a recipe without data.root stops before anything is scanned or written, and partial videos
(truncated, corrupt after frame k) are used with a one-line warning or skipped below data.min_decoded_fraction."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import colour_frames, write_video
from dymsta.cli import main
from dymsta.config import load_config, recipe_path
from dymsta.data import VideoClipDataset, VideoRecord, collate_clips, probe_video
from dymsta.data.decode import read_clip
from dymsta.data.splits import DatasetError, load_splits
from dymsta.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("recipe", ["folder", "ucf101_split1", "hmdb51", "kinetics"])
def test_a_recipe_without_its_dataset_stops_naming_data_root(
    recipe: str, tmp_path: Path, tiny_video, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    tiny_video("a_1x.mkv", num_frames=4, folder=tmp_path / "fixtures" / "a")  # videos below the current folder
    tiny_video("b_1x.mkv", num_frames=4, folder=tmp_path / "fixtures" / "b")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["train", "--config", recipe]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.root" in err and "--set data.root=" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no runs/, no index
    assert main(["extract", "--config", recipe, "--set", "data.root="]) == 2
    assert "data.root" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="data.root is not set"):
        load_splits("folder", "")


def _record(path: Path) -> VideoRecord:
    info = probe_video(path)
    return VideoRecord(str(path), 0, path.name, "g", info.num_frames, info.fps, info.header_frames)


def _dataset(records: list[VideoRecord], **kw) -> VideoClipDataset:
    return VideoClipDataset(records, num_frames=4, size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=32, **kw)


@pytest.fixture
def cut_files(tmp_path: Path) -> dict[str, Path]:
    whole = write_video(tmp_path / "whole.avi", colour_frames("green", 40, seed=2), codec="ffv1")
    data = whole.read_bytes()
    out = {"whole": whole}
    for name, share in (("most", 0.8), ("little", 0.2)):
        out[name] = tmp_path / f"{name}.avi"
        out[name].write_bytes(data[: int(len(data) * share)])
    return out


def test_partial_files_warn_once_or_are_skipped(cut_files: dict, caplog: pytest.LogCaptureFixture) -> None:
    records = [_record(cut_files[k]) for k in ("whole", "most", "little")]
    most, little = records[1], records[2]
    assert most.header_frames == little.header_frames == 40 and little.num_frames < 20 < most.num_frames < 40
    ds = _dataset(records, views=2, min_decoded_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        batch = collate_clips([ds[i] for i in range(len(ds))])
    assert batch["num_skipped"] == 2 and batch["video_id"] == ["whole.avi", "whole.avi", "most.avi", "most.avi"]
    assert ds.num_skipped == 1 and f"decoded {little.num_frames} of 40 frames" in ds.bad_files[little.path]
    assert "below data.min_decoded_fraction=0.5" in ds.bad_files[little.path]
    assert list(ds.partial_files) == [most.path]
    warned = [r.getMessage() for r in caplog.records if "of 40 frames" in r.getMessage()]
    assert len(warned) == 2 and all("\n" not in w for w in warned)  # each file once, though two views each
    assert any(most.path in w and "using those" in w for w in warned)
    keep_all = _dataset([little], min_decoded_fraction=0.0)
    assert keep_all[0] is not None and keep_all.num_skipped == 0


def test_a_stream_that_fails_mid_way_is_resampled_over_what_decodes(tmp_path: Path) -> None:
    whole = write_video(tmp_path / "whole.avi", colour_frames("blue", 40, seed=4), codec="ffv1")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    record = VideoRecord(str(cut), 0, "cut", "g", num_frames=40, fps=25.0, header_frames=40)  # an index that lies
    clip = read_clip(cut, [0, 39], strict=False)
    k = clip.num_decoded
    assert clip.ended_early and 0 < k < 40
    ds = _dataset([record], min_decoded_fraction=0.3, uint8=True)
    streams, report = ds.load(0)
    assert (report.frames_decoded, report.frames_expected) == (k, 40) and f"decoded {k} of 40" in report.warning
    prefix = VideoRecord(str(cut), 0, "cut", "g", num_frames=k, fps=25.0)
    expected, _ = _dataset([prefix], min_decoded_fraction=0.3, uint8=True).load(0)
    np.testing.assert_array_equal(streams["rgb"].numpy(), expected["rgb"].numpy())  # sampled over the k frames
    with pytest.raises(ValueError, match="min_decoded_fraction"):
        _dataset([record], min_decoded_fraction=1.5)


def test_config_takes_the_fraction_and_checks_it() -> None:
    cfg = load_config(recipe_path("folder"), ["data.root=/x", "data.min_decoded_fraction=0.8"])
    assert cfg.data.min_decoded_fraction == 0.8
    with pytest.raises(ValueError, match="data.min_decoded_fraction"):
        load_config(recipe_path("folder"), ["data.root=/x", "data.min_decoded_fraction=2"])

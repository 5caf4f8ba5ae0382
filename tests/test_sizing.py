"""The feature cache's size and build time before it is built, and the free-space check (issue 19, part 1)."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from conftest import shared_data_dir
from dymsta.cli import main
from dymsta.config import load_config
from dymsta.engine.sizing import (
    CachePart,
    CacheSpaceError,
    check_free_space,
    format_bytes,
    format_plan,
    plan_cache,
    row_bytes,
)

LITE0_224 = (1280, 16, 7, 7)  # EfficientNet-Lite0's grid at 224 px, 16 frames
REPO = Path(__file__).resolve().parents[1]


def test_row_bytes_and_totals() -> None:
    assert row_bytes(LITE0_224, "float16") == 1280 * 16 * 49 * 2 == 2_007_040  # the 2.0 MB
    assert row_bytes(LITE0_224, "float32") == 2 * row_bytes(LITE0_224, "float16")
    assert row_bytes(LITE0_224, "uint8") == 1280 * 16 * 49 + 1280 * 2 * 4  # rows and their per-channel scales
    parts = [CachePart("train", 100, 4), CachePart("val", 20, 1, built=True), CachePart("test-v1x1", 30, 1)]
    plan = plan_cache(parts, {"rgb": LITE0_224, "mv": LITE0_224}, dtype="float16", seconds_per_row=0.5,
                      cache_dir="/tmp")  # fmt: skip
    assert plan.bytes_per_row == 2 * 2_007_040
    assert plan.total_bytes == 450 * plan.bytes_per_row and plan.missing_bytes == 430 * plan.bytes_per_row
    assert plan.missing_seconds == 215.0
    table = format_plan(plan)
    assert "4.0 MB per clip-view" in table and "built" in table and "1.8 GB" in table and "3.6 min" in table
    assert format_bytes(250e9) == "250 GB" and format_bytes(3.2e12) == "3.2 TB"


def test_free_space_check_names_both_numbers(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    rows = free // 2_007_040 + 1000  # just more than the disk holds
    plan = plan_cache([CachePart("train", rows, 1)], {"rgb": LITE0_224}, dtype="float16", seconds_per_row=0.1,
                      cache_dir=tmp_path / "cache" / "deeper")  # fmt: skip
    with pytest.raises(CacheSpaceError) as e:
        check_free_space(plan)
    message = str(e.value)
    assert "\n" not in message and format_bytes(plan.missing_bytes) in message and "free" in message
    assert "cache.check_space=false" in message and str(tmp_path / "cache" / "deeper") in message
    check_free_space(plan_cache([CachePart("train", rows, 1, built=True)], {"rgb": LITE0_224}, dtype="float16",
                                seconds_per_row=0.1, cache_dir=tmp_path))  # fmt: skip  # built: nothing needed


def test_dry_run_prints_the_paper_recipe_without_probing_videos(tmp_path: Path, capsys) -> None:
    shared = shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data (the official UCF101 split files) is absent")
    args = ["extract", "--config", "ucf101_split1", "--dry-run", "--out", str(tmp_path / "run")]
    sets = [f"data.root={tmp_path}", f"data.annotations={shared / 'ucf101-splits'}", "model.runtime=torch",
            f"cache.dir={tmp_path / 'cache'}"]  # fmt: skip
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    cfg = load_config(REPO / "configs" / "ucf101_split1.yaml", [f"data.root={tmp_path}"])
    val = round(9537 * cfg.data.val_fraction)
    rows = (9537 - val) * cfg.cache.train_views + val + 3783 * cfg.data.test_clips * cfg.data.test_crops
    assert f"{rows:,}" in out and f"{9537 - val:,}" in out and "3,783" in out
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing built
    assert main([*args, "--videos", "240000,0,20000", "--set", f"data.root={tmp_path}", "--set",
                 "model.runtime=torch"]) == 0  # fmt: skip
    assert "240,000" in capsys.readouterr().out
    assert main([*args, "--videos", "1,2", "--set", f"data.root={tmp_path}"]) == 2


def test_train_refuses_a_cache_the_disk_cannot_hold_before_writing(colour_run: dict, tmp_path: Path, monkeypatch):
    from dymsta.engine.train import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("dymsta.engine.sizing.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    cache = tmp_path / "cache"
    overrides = [o for o in colour_run["overrides"] if not o.startswith("cache.dir=")]
    overrides += [f"cache.dir={cache}", "train.epochs=1"]
    with pytest.raises(CacheSpaceError, match="the disk has 1.0 kB free"):
        train(load_config(REPO / "configs" / "demo.yaml", overrides), tmp_path / "run")
    assert not list(cache.rglob("*.npy"))  # refused before any row was written
    train(load_config(REPO / "configs" / "demo.yaml", [*overrides, "cache.check_space=false"]), tmp_path / "run2")
    assert any(cache.rglob("*.npy"))

"""The engine end to end on a tiny real synthetic video set: train, cache, resume, DDP, eval, predict, export."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dymsta.cli import main
from dymsta.config import ConfigError, load_config
from dymsta.data import collate_clips
from dymsta.data.synth import SYNTH_CLASSES, generate_synthetic
from dymsta.engine.cache import CachedClips, CacheSpec, StreamSpec, get_or_build_cache
from dymsta.engine.loops import EpochBatchSampler, NonFiniteLossError, collate_features, train_one_epoch
from dymsta.engine.train import HeadNet, build_pipeline, train
from dymsta.models import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 4 groups x 2 clips of 16 frames at 64x64 (real MPEG-4 AVI files, UCF101 layout)."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(
        root,
        classes=list(SYNTH_CLASSES[:4]),
        groups=4,
        clips_per_group=2,
        test_groups=1,
        num_frames=16,
        size=64,
        seed=0,
    )
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_overrides(root: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        "data.num_frames=8",
        "data.size=64",
        "data.workers=0",
        "data.val_fraction=0.34",
        "model.dim=32",
        "model.temporal_kernels=[1,3,5]",
        "model.runtime=torch",  # the runtimes have tests of their own (test_runtime.py); exports cost seconds
        "data.modalities=[rgb]",  # the demo recipe's motion streams: tests that want them set them
        "model.fusion=concat",
        "train.epochs=2",
        "train.batch_size=8",
        f"cache.dir={cache}",
        "cache.train_views=2",
        "cache.batch_size=8",
        *extra,
    ]


def tiny_cfg(root: Path, cache: Path, *extra: str):
    return load_config(REPO / "configs" / "demo.yaml", tiny_overrides(root, cache, *extra))


def test_train_writes_the_whole_run(
    synth_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    summary = train(tiny_cfg(synth_root, cache_dir), run)
    for name in [
        "config.yaml",
        "index.json",
        "metrics.csv",
        "report.json",
        "report.md",
        "summary.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/state.safetensors",
        "plots/accuracy.png",
        "plots/loss.png",
        "plots/lr.png",
        "plots/confusion_matrix.png",
    ]:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    report = json.loads((run / "report.json").read_text())
    for key in ["accuracy", "top5_accuracy", "macro_avg", "weighted_avg", "per_class", "num_videos", "num_skipped"]:
        assert key in report
    assert report["num_videos"] == summary["num_test"] == 4 * 2  # 4 classes x 1 test group x 2 clips
    assert set(report["macro_avg"]) == {"precision", "recall", "f1"}
    assert "Macro avg" in (run / "report.md").read_text()
    assert summary["feature_cache"] is True

    # the same run folder is refused without --resume
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg(synth_root, cache_dir), run)

    # eval / predict / export through the command line, loading the stored config with no flags
    assert main(["eval", str(run), "--views", "2"]) == 0
    assert (run / "eval-test-2x1" / "report.json").is_file()
    assert "Weighted avg" in capsys.readouterr().out
    clip = next((synth_root / "UCF-101").rglob("*.avi"))
    assert main(["predict", str(run), str(clip), "--json", "--top-k", "3", "--explain", str(tmp_path / "ex")]) == 0
    pred = json.loads(capsys.readouterr().out)  # one JSON object per line (tests/test_predict.py checks the fields)
    assert len(pred["predictions"]) == 3 and pred["error"] is None
    assert abs(sum(t["score"] for t in pred["predictions"])) <= 1.0 + 1e-6
    assert {t["label"] for t in pred["predictions"]} <= set(SYNTH_CLASSES[:4])
    assert list((tmp_path / "ex").glob("*.png"))
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"hello")
    assert main(["predict", str(run), str(bad)]) == 1
    assert "not_a_video.mp4" in capsys.readouterr().err
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run / "checkpoints" / "best.safetensors"), str(tmp_path / "m.onnx")]) == 0
    assert "max |diff|" in capsys.readouterr().out


def eval_spec(p) -> CacheSpec:
    """The cache spec of one deterministic eval view per video, for the tiny config."""
    return CacheSpec(
        backbone=p.model.backbone.fingerprint(),
        num_frames=8,
        size=64,
        resize=None,
        mode="eval",
        views=1,
        crops=1,
        seed=0,
    )


def cache_of(p, records, cache: Path, spec: CacheSpec, *, dtype: str = "float16", extract=None, grid=0, **kw):
    """The RGB feature cache of ``records`` (one eval view each, its grid pooled to ``grid`` when written) through
    ``get_or_build_cache``."""
    kw = {"batch_size": 4, "workers": 0, "device": torch.device("cpu"), "amp_dtype": None, **kw}
    return get_or_build_cache(
        "val",
        extract or (lambda batch: p.model.extract(batch, partial=True)),
        lambda modalities: p.clip_dataset(records, mode="eval", modalities=modalities),
        records,
        cache,
        spec=spec,
        streams=[StreamSpec("rgb", "v1", dtype, grid)],
        **kw,
    )


def test_cache_is_reused_and_rebuilt_when_inputs_change(synth_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = build_pipeline(tiny_cfg(synth_root, cache), tmp_path / "run")
    spec = eval_spec(p)
    first = cache_of(p, p.splits.val, cache, spec, amp_dtype=torch.bfloat16)
    stamp = first.streams["rgb"].file.stat().st_mtime_ns
    again = cache_of(p, p.splits.val, cache, spec, amp_dtype=torch.bfloat16)
    assert again.path == first.path and again.streams["rgb"].file.stat().st_mtime_ns == stamp  # reused
    row = first.row(0)["rgb"]
    assert row.dtype.name == "float16" and row.shape[1] == 8  # (Cb, T, h, w)

    other = cache_of(p, p.splits.val, cache, CacheSpec(**{**spec.__dict__, "views": 1, "seed": 1}))
    assert other.path != first.path  # any setting change -> a new cache
    video = Path(p.splits.val[0].path)
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))  # a copied dataset: new mtimes, same bytes
    assert spec.key(p.splits.val) == first.index["key"]
    original = video.read_bytes()
    changed = bytearray(original)
    changed[-100] ^= 0xFF  # the same size, one byte of its end changed: a new key
    try:
        video.write_bytes(bytes(changed))
        assert spec.key(p.splits.val) != first.index["key"]
    finally:
        video.write_bytes(original)  # the module's other tests share these videos


def test_interrupted_cache_build_never_looks_complete(synth_root: Path, tmp_path: Path) -> None:
    p = build_pipeline(tiny_cfg(synth_root, tmp_path / "cache"), tmp_path / "run")
    spec = eval_spec(p)
    calls = []

    def boom(batch: dict) -> dict:
        calls.append(1)
        if len(calls) > 2:  # the probe and the first batch pass, then the "machine dies"
            raise KeyboardInterrupt
        return p.model.extract(batch, partial=True)

    with pytest.raises(KeyboardInterrupt):
        cache_of(p, p.splits.val, tmp_path / "cache", spec, extract=boom, batch_size=2)
    assert not list((tmp_path / "cache").rglob("index.json"))
    assert not list((tmp_path / "cache").rglob("*.npy"))  # the half-written stream was removed
    store = cache_of(p, p.splits.val, tmp_path / "cache", spec, batch_size=2)
    assert store.valid.all() and len(store) == len(p.splits.val)


def test_two_runs_sharing_a_cache_take_turns(synth_root: Path, tmp_path: Path) -> None:
    """A second build of the same stream waits for the first (the cache's lock file), then reuses its rows
    instead of emptying the file being written."""
    p = build_pipeline(tiny_cfg(synth_root, tmp_path / "cache"), tmp_path / "run")
    spec = eval_spec(p)
    started, calls = threading.Event(), {"first": 0, "second": 0}

    def extract_as(who: str):
        def extract(batch: dict) -> dict:
            calls[who] += 1
            started.set()
            time.sleep(0.2)  # a slow build: the second run arrives while it is in progress
            return p.model.extract(batch, partial=True)

        return extract

    stores: dict[str, object] = {}
    first = threading.Thread(
        target=lambda: stores.update(
            first=cache_of(p, p.splits.val, tmp_path / "cache", spec, extract=extract_as("first"), batch_size=2)
        )
    )
    first.start()
    assert started.wait(30)
    stores["second"] = cache_of(p, p.splits.val, tmp_path / "cache", spec, extract=extract_as("second"))
    first.join(60)
    assert calls["first"] > 1 and calls["second"] == 0  # the second run built nothing
    a, b = stores["first"], stores["second"]
    assert a.path == b.path and a.valid.all()
    for i in range(len(a)):
        assert np.abs(b.row(i)["rgb"].astype(np.float32)).sum() > 0
        np.testing.assert_array_equal(a.row(i)["rgb"], b.row(i)["rgb"])


def _cache_files(cache: Path) -> dict[str, int]:
    """Every stream file under ``cache`` -> its mtime (ns)."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.glob("*/*.npy")}


def test_one_cache_serves_every_head_and_grows_by_stream(synth_root: Path, tmp_path: Path) -> None:
    """With the whole grid cached, TSN and the linear probe read DyMSTA-Net's cache; a new stream adds its file and
    leaves the others alone; the default layout (the grid the head reads) adds a stream file per grid."""
    cache = tmp_path / "cache"
    full = "cache.grid=full"
    train(tiny_cfg(synth_root, cache, "train.epochs=1", full), tmp_path / "dymsta")
    first = _cache_files(cache)
    assert first and all(Path(f).name.startswith("rgb-") for f in first)
    for arch in ("tsn", "linear"):
        summary = train(tiny_cfg(synth_root, cache, "train.epochs=1", full, f"model.arch={arch}"), tmp_path / arch)
        assert _cache_files(cache) == first, arch  # no new cache, nothing rewritten
        assert summary["test"]["num_videos"] == 8
    train(tiny_cfg(synth_root, cache, "train.epochs=1", "model.arch=tsn"), tmp_path / "tsn-auto")
    pooled = set(_cache_files(cache)) - set(first)
    assert len(pooled) == 3 and {Path(f).parent.name for f in pooled} == {Path(f).parent.name for f in first}
    for f in pooled:  # beside the full-grid files, in the same caches: 1x1 rows of the frame mean
        index = json.loads((cache / Path(f).parent / "index.json").read_text())
        (entry,) = [e for e in index["streams"].values() if e["file"] == Path(f).name]
        assert entry["row_shape"][-2:] == [1, 1]
    first = _cache_files(cache)

    train(tiny_cfg(synth_root, cache, "train.epochs=1", full, "data.modalities=[rgb,rgbdiff]"), tmp_path / "two")
    grown = _cache_files(cache)
    assert {k: v for k, v in grown.items() if k in first} == first  # the rgb files are untouched
    added = set(grown) - set(first)
    assert added and all(Path(f).name.startswith("rgbdiff-") for f in added)
    clip = next((synth_root / "UCF-101").rglob("*.avi"))  # predict, explain and export the two-stream model
    assert main(["predict", str(tmp_path / "two"), str(clip), "--explain", str(tmp_path / "ex")]) == 0
    assert list((tmp_path / "ex").glob("*_attention.png"))
    assert main(["export", str(tmp_path / "two"), str(tmp_path / "two.onnx")]) == 0

    summary = train(tiny_cfg(synth_root, cache, "train.epochs=1", full, "cache.dtype=uint8"), tmp_path / "uint8")
    stored = set(_cache_files(cache)) - set(grown)
    assert stored and all(Path(f).name.startswith("rgb-") for f in stored)  # uint8 rows: a stream file of its own
    assert summary["test"]["num_videos"] == 8


def test_uint8_storage_is_within_half_a_step() -> None:
    from dymsta.engine.cache import dequantize, quantize

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 4, 3, 3)) * rng.uniform(0.1, 5, (16, 1, 1, 1))).astype(np.float32)
    x[3] = 1.5  # a constant channel
    q, scales = quantize(x)
    assert q.dtype == np.uint8 and scales.shape == (16, 2)
    err = np.abs(dequantize(q, scales) - x)
    assert (err <= scales[:, 1].reshape(-1, 1, 1, 1) / 2 + 1e-6).all()
    assert err[3].max() == 0


def test_float16_rows_read_as_stored_give_the_float32_reference_logits(synth_root: Path, tmp_path: Path) -> None:
    """The fast read (float16 rows kept as stored, one cast in the head) == rows copied to float32 first."""
    cfg = tiny_cfg(synth_root, tmp_path / "cache", "train.amp=none")
    p = build_pipeline(cfg, tmp_path / "run")
    store = cache_of(p, p.splits.val, tmp_path / "cache", eval_spec(p))  # float16 storage
    fast = CachedClips(store, per_video=False, grid=0)
    pooled = CachedClips(store, per_video=False, grid=1)
    items = [fast[i] for i in range(len(fast))]
    assert all(f["rgb"].dtype == torch.float16 for f, _, _ in items)  # no per-row copy
    assert pooled[0][0]["rgb"].dtype == torch.float32  # pooled in float32, not rounded back to float16
    reference = [
        ({k: torch.from_numpy(v.astype(np.float32)) for k, v in store.row(i).items()}, 0, "") for i in range(len(fast))
    ]
    batch, ref_batch = collate_features(items), collate_features(reference)
    torch.testing.assert_close(batch["inputs"]["rgb"].float(), ref_batch["inputs"]["rgb"], rtol=0, atol=0)
    net = HeadNet(p.model).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(batch["inputs"]), net(ref_batch["inputs"]), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("stored", "arch", "head_conv"),
    [
        ("full grid", "dymsta", "backbone"),
        ("grid the head reads", "dymsta", "backbone"),
        ("grid the head reads", "linear", "backbone"),
        ("full grid", "dymsta", "trained"),
        ("grid the head reads", "dymsta", "trained"),
        ("grid the head reads", "linear", "trained"),
        ("grid the head reads", "dymsta", "stage"),
    ],
)
def test_training_from_cache_equals_training_through_the_backbone(
    synth_root: Path, tmp_path: Path, stored: str, arch: str, head_conv: str
) -> None:
    """Same clips, same order, same seed: the head trained on cached fp32 features == trained end to end, with the
    whole grid cached (pooled when read) or the grid pooled before it is written (``cache.grid: auto``; the linear
    probe reads the frame mean, so its cache holds 1x1 grids). With ``model.head_conv=trained`` the cache holds the
    activations before the backbone's last layer, whose per-stream copies train from it exactly as through the
    backbone; with ``model.head_conv=stage`` the cache holds the last stage's input on the whole grid and that
    stage trains from it too."""
    extra = ("cache.dtype=float32", "train.amp=none", f"model.arch={arch}", f"model.head_conv={head_conv}")
    cfg = tiny_cfg(synth_root, tmp_path / "cache", *extra)
    p = build_pipeline(cfg, tmp_path / "run")
    records = p.splits.train
    clips = p.clip_dataset(records, mode="eval")  # deterministic views, so both paths see the same pixels
    grid = 0 if stored == "full grid" else p.read_grid()
    store = cache_of(p, records, tmp_path / "cache", eval_spec(p), dtype="float32", grid=grid)
    with torch.no_grad():
        computed = tuple(p.model.extract({"rgb": clips[0][0]["rgb"][None].float()}, partial=True)["rgb"].shape[1:])
    assert store.shapes["rgb"] == StreamSpec("rgb", "v1", "float32", grid).stored_shape(computed)
    assert (store.shapes["rgb"] == computed) == (grid == 0 or computed[-1] <= grid)
    assert computed[0] == {"backbone": 1280, "trained": 320, "stage": 192}[head_conv]  # Lite0: 192 -> 320 -> 1280
    feats = CachedClips(store, per_video=False, grid=p.read_grid())

    def run(dataset, collate, net_of) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(cfg.model)
        net = net_of(model)
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
        sampler = EpochBatchSampler(len(dataset), 4, shuffle=True, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            torch.manual_seed(epoch)
            train_one_epoch(net, loader, opt, device=torch.device("cpu"), global_batch_size=4)
        return {k: v.clone() for k, v in model.state_dict().items()}

    via_cache = run(feats, collate_features, HeadNet)
    via_backbone = run(clips, collate_clips, lambda m: m)
    assert via_cache.keys() == via_backbone.keys()
    changed = 0
    initial = build_model(cfg.model).state_dict()
    for k, v in via_cache.items():
        torch.testing.assert_close(v, via_backbone[k], atol=2e-5, rtol=1e-4, msg=k)
        changed += int(not k.startswith("backbone"))
    assert changed > 0
    trained = [k for k in via_cache if k.startswith("head_") and not torch.equal(via_cache[k], initial[k])]
    assert bool(trained) == (head_conv != "backbone")
    assert any(k.startswith("head_stages") for k in trained) == (head_conv == "stage")
    assert all("running" not in k for k in trained)  # the norm keeps ImageNet's statistics


def test_tiny_overfit_reaches_full_train_accuracy(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        synth_root,
        cache_dir,
        "train.epochs=40",
        "optim.lr=0.003",
        "optim.scheduler=none",
        "train.label_smoothing=0",
        "model.dropout=0",
        "data.val_fraction=0",
    )
    train(cfg, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert max(float(r["train_acc"]) for r in rows) == 1.0


def test_select_last_makes_the_latest_epoch_the_runs_model(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "last"
    summary = train(tiny_cfg(synth_root, cache_dir, "train.epochs=3", "train.select=last"), run)
    assert summary["best_epoch"] == 3
    last_row = list(csv.DictReader((run / "metrics.csv").open()))[-1]
    assert summary["selected_val"]["val_acc"] == pytest.approx(float(last_row["val_acc"]))  # the kept epoch's
    assert summary["best_val"]["val_acc"] >= summary["selected_val"]["val_acc"]  # the best seen
    best = load_file(str(run / "checkpoints" / "best.safetensors"))
    last = _weights(run)
    assert best.keys() == last.keys()
    assert all(torch.equal(best[k], last[k]) for k in best)
    with pytest.raises(ConfigError, match="train.select"):
        tiny_cfg(synth_root, cache_dir, "train.select=first")


def test_unreadable_video_is_counted_not_fatal(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "UCF-101").rglob("*_g04_*.avi"))[0]  # a training group
    victim.write_bytes(victim.read_bytes()[:300])  # truncated: header only
    summary = train(tiny_cfg(root, cache_dir, "train.epochs=1"), tmp_path / "run")
    assert summary["num_unreadable"] == 1
    assert victim.name in json.dumps(summary["unreadable"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    synth_root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dymsta.engine.train as engine_train

    real_build = engine_train.build_model

    def poisoned_build(cfg):
        model = real_build(cfg)
        real_head = model.forward_head

        def head(x, **kw):
            out = real_head(x, **kw)
            return out * float("nan") if model.epoch_seen >= 1 else out

        def set_epoch(epoch: int) -> None:
            model.epoch_seen = epoch

        model.epoch_seen = 0
        model.forward_head = head
        model.set_epoch = set_epoch
        return model

    monkeypatch.setattr(engine_train, "build_model", poisoned_build)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(tiny_cfg(synth_root, cache_dir, "train.epochs=3"), run)
    weights = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 1  # epoch 1 only


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dymsta", *args], env=env, cwd=REPO, **kw)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def _train_args(root: Path, cache: Path, *sets: str) -> list[str]:
    """``dymsta train`` arguments for the tiny config; ``sets`` come last, so they win."""
    args = ["train", "--config", str(REPO / "configs" / "demo.yaml")]
    for o in [*tiny_overrides(root, cache), *sets]:
        args += ["--set", o]
    return args


def _rows(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((run / "metrics.csv").open())]


def test_checkpoints_hold_the_weight_average_and_the_fitted_input_norm(
    synth_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "ema"
    train(tiny_cfg(synth_root, cache_dir, "train.ema=0.5", "model.input_norm=true"), run)
    state = load_file(str(run / "checkpoints" / "state.safetensors"))
    last = _weights(run)
    head = [k for k in last if not k.startswith(("backbone.", "input_norm.")) and last[k].is_floating_point()]
    assert head
    for k in head:
        corrected = state[f"ema.{k}"] / (1 - 0.5 ** json.loads(load_meta(run)["info"])["ema_steps"])
        torch.testing.assert_close(last[k], corrected.to(last[k].dtype), rtol=0, atol=0, msg=k)  # the average
    assert any(not torch.equal(last[k], state[f"model.{k}"]) for k in head)  # the state: the raw weights too
    mean, inv_std = last["input_norm.rgb.mean"], last["input_norm.rgb.inv_std"]
    assert mean.abs().sum() > 0 and not torch.allclose(inv_std, torch.ones_like(inv_std))  # fitted, not identity
    assert torch.equal(mean, state["model.input_norm.rgb.mean"])  # the average leaves the statistics alone


def test_input_norm_without_a_cache_fits_on_backbone_features(synth_root: Path, cache_dir: Path) -> None:
    """The path for end-to-end training: statistics from training batches through the frozen backbone."""
    from dymsta.engine.input_norm import fit_input_norm
    from dymsta.engine.train import build_pipeline, input_norm_batches

    cfg = tiny_cfg(synth_root, cache_dir, "cache.enabled=false", "model.input_norm=true", "train.batch_size=4")
    p = build_pipeline(cfg, cache_dir / "uncached-run")
    assert not p.use_cache
    loader, _, train_set = p.loader(p.splits.train, split="train", train=True, batch_size=4)
    batches = list(input_norm_batches(p, train_set, loader))
    assert batches and batches[0]["rgb"].shape[1:3] == (1280, 8)  # (B, C, T, h, w) features, not frames
    fit_input_norm(p.model, batches)
    feats = torch.cat([b["rgb"].float() for b in batches]).transpose(0, 1).reshape(1280, -1)  # (C, everything)
    norm = p.model.input_norm["rgb"]
    torch.testing.assert_close(norm.mean, feats.mean(1), atol=1e-4, rtol=1e-4)
    assert (norm.inv_std != 1).any()


def load_meta(run: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(run / "checkpoints" / "state.safetensors"), framework="pt") as f:
        return f.metadata()


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    epochs = 30
    # resume with a motion stream and the weight average (its tensors and step count travel in the state file)
    streams = ("data.modalities=[rgb,mv]", "data.motion.mv_encoding=hist", "train.ema=0.9")
    args = _train_args(
        synth_root, cache_dir, "train.threads=1", "train.deterministic=true", f"train.epochs={epochs}", *streams
    )
    full = tmp_path / "full"
    assert _run_cli([*args, "--out", str(full)]).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = _run_cli([*args, "--out", str(killed)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (killed / "metrics.csv").exists() and len(_rows(killed)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(_rows(killed))
    assert done_at_kill < epochs
    assert _run_cli([*args, "--out", str(killed), "--resume"]).wait(timeout=300) == 0

    assert _rows(killed) == _rows(full)
    a, b = _weights(full), _weights(killed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (
        json.loads((killed / "report.json").read_text())["accuracy"]
        == json.loads((full / "report.json").read_text())["accuracy"]
    )


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found"
    streams = "data.modalities=[rgb,rgbdiff,mv]"  # every stream, cached by 2 ranks
    args = _train_args(
        synth_root, cache_dir, "train.threads=1", "model.dropout=0", "train.epochs=3", "train.amp=none", streams
    )
    single = tmp_path / "single"
    assert _run_cli([*args, "--out", str(single)]).wait(timeout=300) == 0
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "dymsta", *args, "--out", str(ddp)]
    assert subprocess.run(cmd, env=env, cwd=REPO, timeout=300).returncode == 0
    a, b = _weights(single), _weights(ddp)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=k)
    for ra, rb in zip(_rows(single), _rows(ddp), strict=True):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), abs=1e-4)
        assert float(ra["val_acc"]) == pytest.approx(float(rb["val_acc"]), abs=1e-9)
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2


def test_cli_help_and_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for cmd in ["demo", "train", "eval", "predict", "extract", "export", "synth"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.yaml" in err
    assert main(["train", "--config", "demo", "--set", "train.epochz=1"]) == 2
    assert "did you mean train.epochs" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_mixup_step_equals_its_definition() -> None:
    """One mixup step = SGD on lam * CE(y) + (1 - lam) * CE(y[perm]) of the mixed inputs, lam/perm from the rng."""
    import numpy as np

    from dymsta.engine.loops import mixup_params

    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    net = torch.nn.Linear(4, 3)
    ref = torch.nn.Linear(4, 3)
    ref.load_state_dict(net.state_dict())
    batch = {"inputs": x, "label": y, "video_id": [""] * 6, "num_skipped": 0}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    train_one_epoch(
        net, [batch], opt, device=torch.device("cpu"), global_batch_size=6, mixup=0.4, rng=np.random.default_rng(7)
    )
    lam, perm = mixup_params(6, 0.4, np.random.default_rng(7))
    assert 0.0 < lam < 1.0 and sorted(perm.tolist()) == list(range(6))
    logits = ref(lam * x + (1 - lam) * x[perm])
    loss = lam * torch.nn.functional.cross_entropy(logits, y) + (1 - lam) * torch.nn.functional.cross_entropy(
        logits, y[perm]
    )
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert mixup_params(6, 0.0, np.random.default_rng(7)) == (1.0, None)

"""Split files, dataset layouts, the video index cache, group-aware validation, and the clip dataset."""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dymsta.data.index as index_module
from dymsta.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    DecoderBackendError,
    VideoClipDataset,
    VideoRecord,
    carve_validation,
    collate_clips,
    load_splits,
    probe_video,
    torchcodec_available,
)
from dymsta.data.splits import folder_group, hmdb51_group, parse_hmdb51_splits, parse_ucf101_splits, ucf101_group

# ------------------------------------------------------------------------------- official split files (real)


def test_ucf101_official_split_files(shared_data):
    ann = shared_data / "ucf101-splits"
    expected = {1: (9537, 3783, range(1, 8)), 2: (9586, 3734, range(8, 15)), 3: (9624, 3696, range(15, 22))}
    for split, (n_train, n_test, test_groups) in expected.items():
        classes, train, test = parse_ucf101_splits(ann, split)
        assert len(classes) == 101 and (len(train), len(test)) == (n_train, n_test)
        assert {ucf101_group(rel) for rel, _ in test} == {f"g{g:02d}" for g in test_groups}
        assert not {ucf101_group(rel) for rel, _ in train} & {ucf101_group(rel) for rel, _ in test}
        assert set(Counter(label for _, label in test)) == set(range(101))  # every class tested
    # classInd spells HandstandPushups, the clip names HandStandPushups: both map to the same class
    hsp = classes.index("HandstandPushups")
    names = [rel for rel, label in train if label == hsp]
    assert names and all("v_HandStandPushups_" in rel for rel in names)


def test_hmdb51_official_split_files(shared_data):
    for split in (1, 2, 3):
        classes, train, test = parse_hmdb51_splits(shared_data / "hmdb51-splits", split)
        assert len(classes) == 51 and classes == (shared_data / "hmdb51-splits" / "class_list.txt").read_text().split()
        assert set(Counter(c for c, _ in train).values()) == {70}  # the 70/30 protocol, per class
        assert set(Counter(c for c, _ in test).values()) == {30}
    for cls, name in train + test:  # every official clip name yields its source movie
        assert hmdb51_group(name, cls) != Path(name).stem


def test_ucf101_mini_loads(shared_data, tmp_path):
    root = shared_data / "ucf101-mini"
    splits = load_splits("ucf101", root, val_fraction=0.0, index_cache=tmp_path / "index.json")
    assert (len(splits.train), len(splits.val), len(splits.test), len(splits.skipped)) == (251, 0, 159, 0)
    assert splits.class_names[0] == "BabyCrawling" and len(splits.class_names) == 8
    assert all(Path(r.path).is_file() and r.num_frames > 0 for r in splits.train + splits.test)
    carved = load_splits("ucf101", root, val_fraction=0.1, index_cache=tmp_path / "index.json")
    assert len(carved.train) + len(carved.val) == 251 and carved.val
    assert not {r.group for r in carved.train} & {r.group for r in carved.val}
    ds = VideoClipDataset(carved.test[:2], num_frames=8, size=112, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    streams, label, video_id = ds[1]
    clip = streams["rgb"]
    assert clip.shape == (3, 8, 112, 112) and label == carved.test[1].label and video_id.endswith(".avi")


# ------------------------------------------------------------------------------------------ built layouts


def _crlf(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


@pytest.fixture
def ucf_root(tmp_path, tiny_video) -> Path:
    """UCF101 layout: 2 classes (one with the HandstandPushups spelling mismatch), 3 groups, CRLF lists."""
    root = tmp_path / "ucf"
    names = {"HandstandPushups": "HandStandPushups", "Punch": "Punch"}
    for folder, spelled in names.items():
        for g in (1, 8, 9):
            for c in (1, 2):
                tiny_video(
                    f"v_{spelled}_g{g:02d}_c{c:02d}.avi",
                    folder=root / "UCF-101" / folder,
                    codec="mpeg4",
                    num_frames=10 + c,
                    height=32,
                    width=48,
                    seed=g * 10 + c,
                )
    (root / "UCF-101" / "Punch" / "v_Punch_g09_c02.avi").write_bytes(b"not a video at all")
    ann = root / "ucfTrainTestlist"
    _crlf(ann / "classInd.txt", ["1 HandstandPushups", "2 Punch"])
    train = [
        f"{f}/v_{s}_g{g:02d}_c{c:02d}.avi {i}"
        for i, (f, s) in enumerate(names.items(), 1)
        for g in (8, 9)
        for c in (1, 2)
    ]
    _crlf(ann / "trainlist01.txt", [*train, "Punch/v_Punch_g09_c03.avi 2"])  # listed, not on disk
    _crlf(ann / "testlist01.txt", [f"{f}/v_{s}_g01_c{c:02d}.avi" for f, s in names.items() for c in (1, 2)])
    return root


def test_ucf101_layout(ucf_root, tmp_path):
    splits = load_splits("ucf101", ucf_root, val_fraction=0.0, index_cache=tmp_path / "i.json")
    assert splits.class_names == ["HandstandPushups", "Punch"]
    assert len(splits.train) == 7 and len(splits.test) == 4
    assert sorted(r.label for r in splits.test) == [0, 0, 1, 1]
    assert {r.group for r in splits.train} == {"g08", "g09"} and {r.group for r in splits.test} == {"g01"}
    reasons = dict((Path(p).name, why) for p, why in splits.skipped)
    assert reasons["v_Punch_g09_c03.avi"] == "file not found"
    assert "not a video" in reasons["v_Punch_g09_c02.avi"]
    assert {r.num_frames for r in splits.test} == {11, 12}


def test_ucf101_validation_by_group(ucf_root):
    splits = load_splits("ucf101", ucf_root, val_fraction=0.3, seed=1)
    assert splits.val and splits.train
    assert not {r.group for r in splits.train} & {r.group for r in splits.val}


def test_ucf101_label_mismatch_is_reported(ucf_root):
    path = ucf_root / "ucfTrainTestlist" / "trainlist01.txt"
    path.write_bytes(
        path.read_bytes().replace(
            b"HandstandPushups/v_HandStandPushups_g08_c01.avi 1", b"HandstandPushups/v_HandStandPushups_g08_c01.avi 2"
        )
    )
    with pytest.raises(DatasetError, match=r"trainlist01.txt:1: label"):
        load_splits("ucf101", ucf_root)


def test_hmdb51_layout(tmp_path, tiny_video):
    root = tmp_path / "hmdb"
    clips = {
        "drink": [
            "Movie_A_drink_u_nm_np1_fr_goo_0",
            "Movie_A_drink_u_nm_np1_fr_goo_1",
            "Movie_B_drink_h_cm_np2_le_med_0",
            "Movie_C_drink_f_nm_np1_ri_bad_3",
        ],
        "climb_stairs": ["Movie_A_climb_stairs_f_cm_np1_fr_med_0", "Movie_D_climb_stairs_f_cm_np1_ba_med_2"],
    }
    ann = root / "testTrainMulti_7030_splits"
    ann.mkdir(parents=True)
    for cls, stems in clips.items():
        for i, stem in enumerate(stems):
            ext = ".mp4" if i == 0 else ".avi"  # a re-encoded copy is found under the listed .avi name
            tiny_video(stem + ext, folder=root / cls, num_frames=6, height=24, width=32, codec="mpeg4")
        ids = ["1", "2", "1", "0"][: len(stems)]
        (ann / f"{cls}_test_split1.txt").write_text("".join(f"{s}.avi {i} \n" for s, i in zip(stems, ids, strict=True)))
    splits = load_splits("hmdb51", root, val_fraction=0.0)
    assert splits.class_names == ["climb_stairs", "drink"]
    assert len(splits.train) == 3 and len(splits.test) == 2 and not splits.skipped
    assert {r.group for r in splits.train} == {"Movie_A", "Movie_B"}
    assert any(r.path.endswith(".mp4") for r in splits.train)
    with pytest.raises(DatasetError, match="HMDB51 has splits"):
        load_splits("hmdb51", root, split=4)


def test_kinetics_csv_layout(tmp_path, tiny_video):
    root = tmp_path / "kin"
    kw = {"num_frames": 5, "height": 24, "width": 32, "codec": "libx264"}
    tiny_video("aaa_000010_000020.mp4", folder=root / "train" / "abseiling", **kw)
    tiny_video("bbb_000000_000010.mp4", folder=root / "train" / "arm wrestling", **kw)
    tiny_video("ccc_000003_000013.mkv", folder=root / "train", **kw)
    tiny_video("ddd.mp4", folder=root / "val", **kw)
    tiny_video("eee_000001_000011.mp4", folder=root / "val" / "abseiling", **kw)
    (root / "annotations").mkdir()
    (root / "annotations" / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,10,20,train\n"
        '"arm wrestling",bbb,0,10,train\n'
        "abseiling,ccc,3,13,train\n"
        "arm wrestling,ddd,5,15,validate\n"
        "abseiling,eee,1.0,11.0,val\n"
        ",fff,0,10,test\n"  # unlabelled test row: ignored
    )
    splits = load_splits("kinetics", root, val_fraction=0.0)
    assert splits.class_names == ["abseiling", "arm wrestling"]
    assert sorted(r.group for r in splits.train) == ["aaa", "bbb", "ccc"]
    assert sorted(r.group for r in splits.test) == ["ddd", "eee"]  # official validation = test set
    assert not splits.skipped
    (root / "annotations" / "bad.csv").write_text("label,youtube_id,split\nx,y,train\n")
    with pytest.raises(DatasetError, match=r"bad.csv: missing column\(s\) time_start, time_end"):
        load_splits("kinetics", root)


def test_folder_layout_split_is_reproducible_and_grouped(tmp_path, tiny_video):
    root = tmp_path / "mine"
    for cls in ("jump", "wave"):
        for person in ("anna", "bob", "carl", "dora"):
            for take in (1, 2):
                tiny_video(
                    f"{person}_{take:02d}.mp4", folder=root / cls, num_frames=4, height=16, width=16, codec="libx264"
                )
    a = load_splits("folder", root, val_fraction=0.25, seed=0)
    b = load_splits("folder", root, val_fraction=0.25, seed=0)
    assert [r.video_id for r in a.test] == [r.video_id for r in b.test]
    assert [r.video_id for r in a.val] == [r.video_id for r in b.val]
    sides = [{r.group for r in s} for s in (a.train, a.val, a.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert {r.label for r in a.test} == {0, 1}  # every class is tested
    assert folder_group("jump", "anna_02.mp4") == "jump/anna" and folder_group("x", "v_X_g03_c04.avi") == "x/v_X_g03"


def test_folder_layout_with_explicit_sides(tmp_path, tiny_video):
    kw = {"num_frames": 4, "height": 16, "width": 16, "codec": "libx264"}
    for side, n in (("train", 3), ("test", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                tiny_video(f"{side}{i}.mp4", folder=tmp_path / side / cls, **kw)
    splits = load_splits("folder", tmp_path, val_fraction=0.0)
    assert (len(splits.train), len(splits.test)) == (6, 2)
    assert all(r.video_id.startswith("test/") for r in splits.test)


def test_max_videos_per_class_spreads_over_groups(ucf_root):
    splits = load_splits("ucf101", ucf_root, val_fraction=0.0, max_videos_per_class=2)
    assert Counter(r.label for r in splits.train) == {0: 2, 1: 2}
    assert {r.group for r in splits.train if r.label == 0} == {"g08", "g09"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "imagenet"}, "data.kind"),
        ({"root": "/definitely/not/here"}, "dataset folder not found"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"annotations": "/nope"}, "split folder not found"),
        ({"split": 4}, "UCF101 has splits"),
    ],
)
def test_dataset_errors_name_the_setting(ucf_root, kwargs, match):
    args = {"kind": "ucf101", "root": ucf_root, **kwargs}
    with pytest.raises(DatasetError, match=match):
        load_splits(args.pop("kind"), args.pop("root"), **args)


def test_malformed_class_index(ucf_root):
    _crlf(ucf_root / "ucfTrainTestlist" / "classInd.txt", ["1 HandstandPushups", "Punch"])
    with pytest.raises(DatasetError, match=r"classInd.txt:2: expected"):
        load_splits("ucf101", ucf_root)


# ----------------------------------------------------------------------------------- group-aware validation


def _records(n: int, groups: int, seed: int = 0) -> list[VideoRecord]:
    rng = np.random.default_rng(seed)
    return [
        VideoRecord(
            path=f"/v/{i}.avi",
            label=int(rng.integers(5)),
            video_id=f"{i}.avi",
            group=f"g{int(rng.integers(groups))}",
            num_frames=10,
            fps=25.0,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_carve_validation_never_splits_a_group(seed):
    records = _records(500, 40, seed)
    train, val = carve_validation(records, 0.2, seed=seed)
    assert len(train) + len(val) == 500
    assert not {r.group for r in train} & {r.group for r in val}
    assert 0.2 * 500 <= len(val) <= 0.2 * 500 + max(Counter(r.group for r in records).values())
    again, _ = carve_validation(list(reversed(records)), 0.2, seed=seed)
    assert {r.video_id for r in again} == {r.video_id for r in train}  # independent of input order
    other, _ = carve_validation(records, 0.2, seed=seed + 100)
    assert {r.video_id for r in other} != {r.video_id for r in train}


def test_carve_validation_edge_cases():
    one_group = _records(10, 1)
    assert carve_validation(one_group, 0.5) == (one_group, [])
    records = _records(10, 5)
    assert carve_validation(records, 0.0) == (records, [])
    train, val = carve_validation(records, 0.95)
    assert train and val  # at least one group stays in train


# ------------------------------------------------------------------------------------------------ the index


def test_index_cache_reuses_and_notices_changes(tmp_path, tiny_video, monkeypatch):
    calls = []

    def counting_probe(path):
        calls.append(Path(path).name)
        return probe_video(path)

    monkeypatch.setattr(index_module, "probe_video", counting_probe)
    cache = tmp_path / "index.json"
    paths = [tiny_video(f"v{i}.mkv", num_frames=5 + i, height=16, width=16)[0] for i in range(3)]
    infos, skipped = index_module.scan_videos(paths, cache=cache, workers=2)
    assert len(calls) == 3 and not skipped and cache.is_file()
    infos, _ = index_module.scan_videos(paths, cache=cache)
    assert len(calls) == 3 and infos[str(paths[2])].num_frames == 7  # all from the cache

    tiny_video("v0.mkv", num_frames=9, height=16, width=16)  # rewritten: new size and mtime
    os.utime(paths[0], ns=(1, 1))  # and an mtime that cannot equal the cached one
    paths[1].unlink()
    infos, skipped = index_module.scan_videos(paths, cache=cache)
    assert calls[3:] == ["v0.mkv"] and infos[str(paths[0])].num_frames == 9
    assert skipped == [(str(paths[1]), "file not found")]


def test_index_remembers_broken_files_and_survives_a_bad_cache(tmp_path, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    cache = tmp_path / "index.json"
    cache.write_text("{not json")
    _, skipped = index_module.scan_videos([bad], cache=cache)
    assert skipped[0][0] == str(bad)
    monkeypatch.setattr(index_module, "probe_video", lambda p: pytest.fail("re-probed a cached broken file"))
    _, again = index_module.scan_videos([bad], cache=cache)
    assert again == skipped


# --------------------------------------------------------------------------------------------- clip dataset


@pytest.fixture
def clip_records(tiny_video) -> tuple[list[VideoRecord], list[np.ndarray]]:
    records, frames = [], []
    for i, n in enumerate((20, 5)):  # the second video is shorter than T = 8
        path, f = tiny_video(f"c{i}.mkv", num_frames=n, height=48, width=64, seed=i)
        records.append(
            VideoRecord(path=str(path), label=i, video_id=f"c{i}.mkv", group=f"g{i}", num_frames=n, fps=25.0)
        )
        frames.append(f)
    return records, frames


def _dataset(records, **kw) -> VideoClipDataset:
    args = {"num_frames": 8, "size": 48, "resize": 48, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, **kw}
    return VideoClipDataset(records, **args)


def _denormalise(clip: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) normalised -> uint8-valued (T, H, W, 3)."""
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return ((clip * s + m) * 255).round().permute(1, 2, 3, 0).numpy()


def test_eval_clip_is_the_centre_crop_of_the_segment_centres(clip_records):
    records, frames = clip_records
    ds = _dataset(records, mode="eval")
    streams, label, video_id = ds[0]
    clip = streams["rgb"]
    assert clip.shape == (3, 8, 48, 48) and clip.dtype == torch.float32 and (label, video_id) == (0, "c0.mkv")
    centres = [1, 3, 6, 8, 11, 13, 16, 18]  # floor((i + 0.5) * 20 / 8)
    np.testing.assert_allclose(_denormalise(clip), frames[0][centres][:, :, 8:56], atol=0.6)
    assert torch.equal(ds[0][0]["rgb"], clip)  # deterministic
    short, _, _ = ds[1]
    assert short["rgb"].shape == (3, 8, 48, 48)  # 5 frames stretched to 8


def test_eval_views_grid(clip_records):
    records, _ = clip_records
    ds = _dataset(records, mode="eval", views=6, crops=3, size=32, resize=48)
    assert len(ds) == 12 and ds.view_of(7) == (1, 1)
    clips = [ds[i][0]["rgb"] for i in range(6)]
    assert all(not torch.equal(clips[0], c) for c in clips[1:])
    with pytest.raises(IndexError):
        ds[12]


def test_train_mode_follows_torch_seed_and_workers(clip_records):
    records, _ = clip_records
    ds = _dataset(records * 4, mode="train", size=32)
    torch.manual_seed(0)
    a = ds[0][0]["rgb"]
    torch.manual_seed(0)
    assert torch.equal(ds[0][0]["rgb"], a)
    assert not torch.equal(ds[0][0]["rgb"], a)  # the RNG moved on: another augmentation

    def batches(seed):
        loader = DataLoader(
            ds, batch_size=4, num_workers=2, collate_fn=collate_clips, generator=torch.Generator().manual_seed(seed)
        )
        return torch.cat([b["video"]["rgb"] for b in loader])

    first = batches(1)
    assert first.shape == (8, 3, 8, 32, 32)
    assert torch.equal(first, batches(1)) and not torch.equal(first, batches(2))


def test_augment_views_are_seeded_and_view0_is_eval(clip_records):
    records, _ = clip_records
    aug = _dataset(records, mode="augment", views=3, size=32)
    assert torch.equal(aug[0][0]["rgb"], _dataset(records, mode="eval", size=32)[0][0]["rgb"])
    torch.manual_seed(123)
    v1 = aug[1][0]["rgb"]
    torch.manual_seed(456)
    assert torch.equal(
        _dataset(records, mode="augment", views=3, size=32)[1][0]["rgb"], v1
    )  # torch's seed plays no part
    assert not torch.equal(aug[2][0]["rgb"], v1)
    assert not torch.equal(_dataset(records, mode="augment", views=3, size=32, seed=1)[1][0]["rgb"], v1)


def _broken_record(tmp_path: Path) -> VideoRecord:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    return VideoRecord(path=str(broken), label=1, video_id="broken.mp4", group="gx", num_frames=10, fps=25.0)


def test_undecodable_file_is_skipped_counted_and_logged_once(clip_records, tmp_path, caplog):
    records, _ = clip_records
    ds = _dataset([records[0], _broken_record(tmp_path)], views=2)
    with caplog.at_level(logging.WARNING, logger="dymsta.data.datasets"):
        items = [ds[i] for i in range(4)]
        copy = pickle.loads(pickle.dumps(ds))  # what a spawned worker gets
        assert copy[3] is None
    assert items[2] is None and items[3] is None and ds.num_skipped == 1
    assert sum("broken.mp4" in r.getMessage() for r in caplog.records) == 1
    assert list(ds.bad_files) == [str(tmp_path / "broken.mp4")]
    batch = collate_clips(items)
    assert batch["video"]["rgb"].shape == (2, 3, 8, 48, 48) and batch["num_skipped"] == 2
    assert batch["label"].dtype == torch.long and batch["video_id"] == ["c0.mkv", "c0.mkv"]
    assert collate_clips([None, None]) is None


def test_bad_file_found_by_workers_is_known_to_the_main_process(clip_records, tmp_path):
    records, _ = clip_records
    ds = _dataset([records[0], _broken_record(tmp_path), records[1]], mode="train", size=32)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips)
    for _ in range(2):  # two epochs: workers are forked afresh each time
        batches = [b for b in loader if b is not None]
        assert sum(b["num_skipped"] for b in batches) == 1 and sum(len(b["video_id"]) for b in batches) == 2
    assert ds.num_skipped == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "test"}, "mode"),
        ({"crops": 2}, "crops"),
        ({"views": 4, "crops": 3}, "multiple"),
        ({"mode": "train", "crops": 3, "views": 3}, "eval mode only"),
        ({"num_frames": 0}, "num_frames"),
        ({"size": 64, "resize": 48}, "resize"),
    ],
)
def test_dataset_setting_errors(clip_records, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _dataset(clip_records[0], **kwargs)


def test_unavailable_backend_fails_at_construction(clip_records):
    with pytest.raises(DecoderBackendError):
        _dataset(clip_records[0], backend="opencv")
    ok, _ = torchcodec_available()
    if not ok:
        with pytest.raises(DecoderBackendError, match="TorchCodec"):
            _dataset(clip_records[0], backend="torchcodec")

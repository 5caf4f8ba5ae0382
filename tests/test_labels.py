"""Label maps: labels.txt / labels.json round trips, the files of other tools, clear errors, a folder or Kinetics
dataset whose class ids a map fixes, and the maps a run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dymsta.cli import main
from dymsta.data import load_splits
from dymsta.data.labels import LabelMapError, read_label_map, write_label_map
from dymsta.data.splits import DatasetError

NAMES = ["abseiling", "air drumming", "tai chi", "Zumba"]


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_label_map(tmp_path / f"labels{suffix}", NAMES)
    assert read_label_map(path) == NAMES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically


def test_formats_of_other_tools(tmp_path: Path) -> None:
    mmaction = tmp_path / "label_map_k400.txt"  # one name per line, CRLF and a trailing blank line
    mmaction.write_bytes(b"abseiling\r\nair drumming\r\ntai chi\r\nZumba\r\n\r\n")
    assert read_label_map(mmaction) == NAMES
    pytorchvideo = tmp_path / "kinetics_classnames.json"  # names wrapped in quotes, ids in any order
    pytorchvideo.write_text(json.dumps({'"tai chi"': 2, '"abseiling"': 0, '"Zumba"': 3, '"air drumming"': 1}))
    assert read_label_map(pytorchvideo) == NAMES
    assert json.loads(write_label_map(tmp_path / "ours.json", NAMES).read_text()) == {n: i for i, n in enumerate(NAMES)}


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("l.txt", "a\n\nb\n", "empty line"),
        ("l.txt", "a\nb\na\n", "twice"),
        ("l.txt", "", "no class names"),
        ("l.json", '{"a": 0, "b": 2}', "missing 1"),
        ("l.json", '{"a": 0, "b": 0}', "both"),
        ("l.json", '{"a": "0"}', "integer"),
        ("l.json", '["a", "b"]', "object"),
        ("l.json", "{not json", "not valid JSON"),
        ("l.csv", "a\n", "labels.txt"),
    ],
)
def test_bad_maps_give_one_line_errors(tmp_path: Path, name: str, content: str, words: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LabelMapError, match=words) as err:
        read_label_map(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LabelMapError, match="not found"):
        read_label_map(tmp_path / "missing.txt")
    with pytest.raises(LabelMapError, match="line break"):
        write_label_map(tmp_path / "x.txt", ["a\nb"])


def _folder(root: Path, tiny_video, classes: list[str]) -> None:
    for cls in classes:
        for k in range(3):
            tiny_video(f"{cls}_{k}x.mkv", num_frames=4, folder=root / cls, seed=k)


def test_a_label_map_fixes_the_class_ids_of_a_folder_dataset(tmp_path: Path, tiny_video) -> None:
    root = tmp_path / "videos"
    _folder(root, tiny_video, ["cat", "dog"])
    assert load_splits("folder", root).class_names == ["cat", "dog"]  # sorted by default
    labels = write_label_map(tmp_path / "labels.json", ["dog", "bird", "cat"])
    splits = load_splits("folder", root, label_map=labels)
    assert splits.class_names == ["dog", "bird", "cat"]
    for r in splits.train + splits.test + splits.val:
        assert splits.class_names[r.label] == Path(r.path).parent.name
    write_label_map(tmp_path / "short.txt", ["dog"])
    with pytest.raises(DatasetError, match="'cat' is not in data.label_map"):
        load_splits("folder", root, label_map=tmp_path / "short.txt")
    with pytest.raises(DatasetError, match="kind=folder or kinetics"):
        load_splits("ucf101", root, label_map=labels)


def test_a_label_map_fixes_kinetics_ids(tmp_path: Path, tiny_video) -> None:
    root = tmp_path / "k"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, label in enumerate(["swim", "run", "swim", "run"]):
        tiny_video(f"yt{i}_000000_000010.mp4", codec="libx264rgb", num_frames=4, folder=root / "train", seed=i)
        rows.append(f"{label},yt{i},0,10,train")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    labels = write_label_map(tmp_path / "labels.txt", ["swim", "jump", "run"])
    splits = load_splits("kinetics", root, annotations=root / "train.csv", label_map=labels, val_fraction=0.0)
    assert splits.class_names == ["swim", "jump", "run"] and sorted(r.label for r in splits.train + splits.test) == [
        0,
        0,
        2,
        2,
    ]


def test_a_run_writes_its_label_maps_and_exports_them(colour_run: dict, tmp_path: Path) -> None:
    run = colour_run["run"]
    assert read_label_map(run / "labels.txt") == read_label_map(run / "labels.json") == colour_run["classes"]
    assert main(["labels", str(run), str(tmp_path / "exported.json")]) == 0
    assert read_label_map(tmp_path / "exported.json") == colour_run["classes"]
    assert main(["labels", str(run), str(tmp_path / "exported.yaml")]) == 2


def test_new_commands_have_help() -> None:
    for cmd in ("predict", "check-videos", "labels"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0

"""Train / validation / test lists of the supported datasets, and group-aware validation carving.

Layouts (``root`` is what ``load_splits`` gets):

- ``ucf101``: ``root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and ``root/ucfTrainTestlist/`` (``classInd.txt``,
  ``trainlist0N.txt``, ``testlist0N.txt``; CRLF as shipped). Labels come from the folder part of each list line,
  matched without regard to case: UCF's ``classInd.txt`` says ``HandstandPushups`` where its file names say
  ``HandStandPushups``. Test lists carry no label. Group: ``gXX`` -- the group *number*, across classes, as the
  official splits hold out whole group numbers.
- ``hmdb51``: ``root/<class>/<clip>.avi`` and the official ``<class>_test_split<N>.txt`` files (``1`` train, ``2``
  test, ``0`` unused) in ``root/testTrainMulti_7030_splits/`` (or ``root/splits/``, or ``root``). A clip stored
  under another video extension (``.mp4``) is found by its stem. Group: the source movie, i.e. the file stem
  before ``_<class>_<body>_<camera>_<people>_<view>_<quality>_<n>``.
- ``kinetics``: a CSV ``label,youtube_id,time_start,time_end,split`` (one file, or every ``*.csv`` of a folder;
  default ``root/annotations/`` or ``root/*.csv``) over clips named ``<youtube_id>_<start:06d>_<end:06d>.<ext>``
  or ``<youtube_id>.<ext>`` anywhere under ``root`` (``<split>/`` or ``<split>/<label>/`` as the downloaders
  write them). Rows of split ``train`` train; labelled ``test`` rows test, and then ``val``/``validate`` rows
  validate; without labelled test rows (the usual case) the official validation rows are the test set and
  validation is carved from train. Rows without a label are ignored. Group: ``youtube_id``.
- ``folder``: ``root/<class>/**/<video>`` (the user's own videos), or ``root/{train,val,test}/<class>/...`` when
  those folders exist. Otherwise test = ``test_fraction`` of each class, chosen by groups in the order of a
  SHA-256 hash of the group name (fixed: no seed), so the same files are test on every machine and run. Group:
  ``<class>/<file stem without a trailing clip number>`` (``jump_03.mp4`` and ``jump_04.mp4`` -> ``jump``).

Validation (when the dataset has none of its own) is carved from train by :func:`carve_validation`: whole groups,
in the order of a hash of ``(seed, group)``, until ``val_fraction`` of the training videos is reached, so no group
is on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dymsta.data.decode import VideoInfo
from dymsta.data.index import VideoRecord, scan_videos
from dymsta.data.sampling import stable_seed
from dymsta.utils import get_logger

__all__ = [
    "KINDS",
    "VIDEO_EXTENSIONS",
    "DatasetError",
    "DatasetSplits",
    "SplitEntry",
    "SplitLists",
    "carve_validation",
    "check_root",
    "folder_group",
    "hmdb51_group",
    "list_dataset",
    "load_splits",
    "parse_hmdb51_splits",
    "parse_ucf101_splits",
    "read_kinetics_csv",
    "ucf101_group",
]

log = get_logger(__name__)

KINDS = ("ucf101", "hmdb51", "kinetics", "folder")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
_KINETICS_VAL_NAMES = ("val", "valid", "validate", "validation")


class DatasetError(ValueError):
    """A dataset folder, split file or setting is missing or malformed (the message names which)."""


@dataclass(frozen=True)
class SplitEntry:
    """A video named by a split list, before indexing: absolute path (may not exist), label, id and group."""

    path: str
    label: int
    video_id: str
    group: str


@dataclass
class SplitLists:
    """What a dataset's split files say: class names and the entries of each side.

    ``val`` is None when the dataset has no validation list of its own (then it is carved from ``train``).
    """

    class_names: list[str]
    train: list[SplitEntry]
    test: list[SplitEntry]
    val: list[SplitEntry] | None = None


@dataclass
class DatasetSplits:
    """Indexed, labelled videos of one split of a dataset.

    Attributes:
        class_names: class index -> name.
        train, val, test: records of each side (val is group-disjoint from train).
        skipped: ``(path, reason)`` for listed videos that are missing or could not be probed.
    """

    class_names: list[str]
    train: list[VideoRecord]
    val: list[VideoRecord]
    test: list[VideoRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ load_splits


def load_splits(
    kind: str,
    root: str | os.PathLike,
    *,
    split: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    annotations: str | os.PathLike | None = None,
    index_cache: str | os.PathLike | None = None,
    workers: int = 0,
    max_videos_per_class: int | None = None,
    test_fraction: float = 0.2,
    label_map: str | os.PathLike | None = None,
) -> DatasetSplits:
    """Read a dataset's split lists, index its videos (probing each once, cached), and carve validation.

    Args:
        kind: ``"ucf101"``, ``"hmdb51"``, ``"kinetics"`` or ``"folder"`` (layouts in the module docstring).
        root: dataset folder.
        split: official split number (UCF101, HMDB51: 1-3); ignored by the others.
        val_fraction: share of training videos held out for validation, by whole groups; 0 = no validation.
        seed: which groups are held out.
        annotations: split-file folder (UCF101, HMDB51), CSV file or folder (Kinetics); None = standard place.
        index_cache: JSON index file (read and updated); None = probe every video.
        workers: probing threads; 0 = automatic.
        max_videos_per_class: keep at most this many videos per class and side, taken round-robin over groups
            (for quick experiments).
        test_fraction: ``folder`` datasets without ``test/``: share of each class used as test (by groups).
        label_map: ``labels.txt`` / ``labels.json`` (:mod:`dymsta.data.labels`) fixing the class names and ids of a
            ``folder`` or ``kinetics`` dataset (default: sorted names); every class found must be in it.

    Raises:
        DatasetError: unknown kind, unset or missing root, missing split files, malformed lines, a class outside
            the label map, or no usable training video.
    """
    if kind not in KINDS:
        raise DatasetError(f"data.kind={kind!r} is not one of {', '.join(KINDS)}")
    check_root(root, kind)
    class_names = None
    if label_map is not None:
        from dymsta.data.labels import read_label_map

        if kind not in ("folder", "kinetics"):
            raise DatasetError(
                f"data.label_map applies to kind=folder or kinetics; {kind} takes its class ids from its split files"
            )
        class_names = read_label_map(label_map)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data.root={str(root)!r}: dataset folder not found")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    if max_videos_per_class is not None and max_videos_per_class < 1:
        raise DatasetError(f"data.max_videos_per_class={max_videos_per_class} must be >= 1 (or None)")
    lists = list_dataset(
        kind, root, split=split, annotations=annotations, test_fraction=test_fraction, class_names=class_names
    )
    if max_videos_per_class is not None:
        lists = _cap_per_class(lists, max_videos_per_class)
    all_entries = lists.train + lists.test + (lists.val or [])
    infos, skipped = scan_videos([e.path for e in all_entries], cache=index_cache, workers=workers)
    train, test = _records(lists.train, infos), _records(lists.test, infos)
    if lists.val is not None:
        val = _records(lists.val, infos)
    else:
        train, val = carve_validation(train, val_fraction, seed=seed)
    if not train:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"{kind} at {root}: no readable training video{first}")
    if skipped:
        log.warning(
            "%s: %d listed videos skipped (missing or unreadable), e.g. %s: %s", kind, len(skipped), *skipped[0]
        )
    log.info(
        "%s split %d: %d classes, %d train / %d val / %d test videos",
        kind,
        split,
        len(lists.class_names),
        len(train),
        len(val),
        len(test),
    )
    return DatasetSplits(class_names=lists.class_names, train=train, val=val, test=test, skipped=skipped)


def list_dataset(
    kind: str,
    root: str | os.PathLike,
    *,
    split: int = 1,
    annotations: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    class_names: Sequence[str] | None = None,
) -> SplitLists:
    """The split lists of a dataset resolved to file paths, without probing any video.

    ``class_names`` (a label map; ``folder`` and ``kinetics``) fixes the class ids instead of sorted names.
    """
    check_root(root, kind)
    root = Path(root)
    if kind == "ucf101":
        return _ucf101_lists(root, split, annotations)
    if kind == "hmdb51":
        return _hmdb51_lists(root, split, annotations)
    if kind == "kinetics":
        return _kinetics_lists(root, annotations, class_names)
    if kind == "folder":
        return _folder_lists(root, test_fraction, class_names)
    raise DatasetError(f"data.kind={kind!r} is not one of {', '.join(KINDS)}")


def check_root(root: str | os.PathLike | None, kind: str) -> None:
    """Stop a recipe whose dataset is not set, before anything is scanned: an empty ``data.root`` would otherwise
    mean the current folder, and a folder dataset would train on whatever videos lie below it."""
    if root is None or not str(root).strip():
        raise DatasetError(
            f"data.root is not set: the {kind} recipe needs its dataset folder (--set data.root=/path/to/dataset)"
        )


def _fixed_classes(found: Iterable[str], class_names: Sequence[str] | None, where: str) -> list[str]:
    """Sorted ``found`` names, or the label map's ``class_names`` after checking that it holds every one found."""
    found = sorted(set(found))
    if class_names is None:
        return found
    unknown = [c for c in found if c not in set(class_names)]
    if unknown:
        raise DatasetError(
            f"{where}: class {unknown[0]!r} is not in data.label_map ({len(unknown)} unknown of {len(found)}; "
            f"the map has {len(class_names)} classes)"
        )
    unused = len(class_names) - len(found)
    if unused:
        log.info("%s: %d of the label map's %d classes have no videos", where, unused, len(class_names))
    return list(class_names)


def _records(entries: Iterable[SplitEntry], infos: dict[str, VideoInfo]) -> list[VideoRecord]:
    out = []
    for e in entries:
        info = infos.get(e.path)
        if info is not None:
            out.append(
                VideoRecord(
                    path=e.path,
                    label=e.label,
                    video_id=e.video_id,
                    group=e.group,
                    num_frames=info.num_frames,
                    fps=info.fps,
                    header_frames=info.header_frames,
                )
            )
    return out


def _cap_per_class(lists: SplitLists, cap: int) -> SplitLists:
    def cap_side(entries: list[SplitEntry]) -> list[SplitEntry]:
        by_class: dict[int, dict[str, list[SplitEntry]]] = defaultdict(lambda: defaultdict(list))
        for e in sorted(entries, key=lambda e: e.video_id):
            by_class[e.label][e.group].append(e)
        kept = []
        for groups in by_class.values():
            queues = [list(v) for _, v in sorted(groups.items())]
            taken = 0
            while taken < cap and any(queues):  # round-robin over groups: a capped set keeps many groups
                for q in queues:
                    if q and taken < cap:
                        kept.append(q.pop(0))
                        taken += 1
        return sorted(kept, key=lambda e: e.video_id)

    val = cap_side(lists.val) if lists.val is not None else None
    return replace(lists, train=cap_side(lists.train), test=cap_side(lists.test), val=val)


# ------------------------------------------------------------------------------------------ group validation


def carve_validation(
    records: Sequence[VideoRecord], val_fraction: float, *, seed: int = 0
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split ``records`` into (train, val) by whole groups, ``val_fraction`` of the videos going to val.

    Groups are taken in the order of a hash of ``(seed, group)`` until val holds at least
    ``round(val_fraction * len(records))`` videos; at least one group always stays in train. Deterministic for a
    seed, independent of the order of ``records``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction} must be in [0, 1)")
    target = round(val_fraction * len(records))
    groups: dict[str, list[VideoRecord]] = defaultdict(list)
    for r in records:
        groups[r.group].append(r)
    if target == 0 or len(groups) < 2:
        if target > 0:
            log.warning("cannot carve validation: all %d training videos are in one group", len(records))
        return list(records), []
    order = sorted(groups, key=lambda g: (stable_seed("val", seed, g), g))
    val_groups: set[str] = set()
    count = 0
    for g in order[:-1]:
        if count >= target:
            break
        val_groups.add(g)
        count += len(groups[g])
    train = [r for r in records if r.group not in val_groups]
    val = [r for r in records if r.group in val_groups]
    return train, val


# ---------------------------------------------------------------------------------------------------- UCF101


def parse_ucf101_splits(
    annotations: str | os.PathLike, split: int = 1
) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """Parse UCF101's ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt``.

    Returns:
        ``(class_names, train, test)``; ``train`` and ``test`` are lists of ``(relative path, label)`` with the
        label taken from the path's folder (case-insensitive) and checked against the train list's own label.
    """
    folder = Path(annotations)
    if split not in (1, 2, 3):
        raise DatasetError(f"data.split={split}: UCF101 has splits 1, 2 and 3")
    class_names = _read_class_ind(folder / "classInd.txt")
    by_lower = {name.lower(): i for i, name in enumerate(class_names)}
    train = _read_ucf_list(folder / f"trainlist{split:02d}.txt", by_lower, labelled=True)
    test = _read_ucf_list(folder / f"testlist{split:02d}.txt", by_lower, labelled=False)
    return class_names, train, test


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines (CRLF or LF) with 1-based numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise DatasetError(f"{path}: split file not found") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read split file ({e.strerror or e})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_class_ind(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}:{n}: expected '<index> <ClassName>', got {line!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DatasetError(f"{path}: class indices must run 1..{len(names)} without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def _read_ucf_list(path: Path, by_lower: dict[str, int], *, labelled: bool) -> list[tuple[str, int]]:
    out = []
    for n, line in _lines(path):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else ""
        label = by_lower.get(folder.lower())
        if label is None:
            raise DatasetError(f"{path}:{n}: class folder {folder!r} of {rel!r} is not in classInd.txt")
        if labelled and len(parts) > 1:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                raise DatasetError(f"{path}:{n}: label {parts[1]!r} disagrees with folder {folder!r} ({label + 1})")
        out.append((rel, label))
    return out


def ucf101_group(relpath: str) -> str:
    """UCF101 group ``gXX`` of ``Class/v_Class_gXX_cYY.avi`` (the stem itself if it has no group)."""
    stem = Path(relpath).stem
    m = re.search(r"_g(\d+)_c\d+$", stem)
    return f"g{int(m.group(1)):02d}" if m else stem


def _ucf101_lists(root: Path, split: int, annotations: str | os.PathLike | None) -> SplitLists:
    ann = Path(annotations) if annotations is not None else root / "ucfTrainTestlist"
    if not ann.is_dir():
        raise DatasetError(f"{ann}: UCF101 split folder not found (set data.annotations)")
    class_names, train, test = parse_ucf101_splits(ann, split)
    video_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    resolve = _CaseInsensitiveResolver(video_dir)

    def entries(items: list[tuple[str, int]]) -> list[SplitEntry]:
        return [SplitEntry(path=resolve(rel), label=lab, video_id=rel, group=ucf101_group(rel)) for rel, lab in items]

    return SplitLists(class_names=class_names, train=entries(train), test=entries(test))


class _CaseInsensitiveResolver:
    """Map ``Folder/file`` onto the disk, ignoring case where the exact name is absent (listing each folder once)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.listings: dict[Path, dict[str, str]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self.listings:
            try:
                self.listings[folder] = {name.lower(): name for name in os.listdir(folder)}
            except OSError:
                self.listings[folder] = {}
        return self.listings[folder]

    def __call__(self, rel: str) -> str:
        path = self.base
        for part in rel.split("/"):
            exact = path / part
            path = exact if exact.exists() else path / self._listing(path).get(part.lower(), part)
        return str(path.absolute())


# ---------------------------------------------------------------------------------------------------- HMDB51

_HMDB_TAGS = r"_[a-z]_(?:cm|nm)_np\d+_(?:fr|ba|le|ri)_(?:bad|med|goo)_\d+$"


def parse_hmdb51_splits(
    annotations: str | os.PathLike, split: int = 1
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Parse the official ``<class>_test_split<N>.txt`` files of one split.

    Returns:
        ``(class_names, train, test)``: class names in the order of ``class_list.txt`` if the folder has one,
        else sorted; and lists of ``(class name, file name)`` (ids 1 and 2; id 0 = unused).
    """
    folder = Path(annotations)
    if split not in (1, 2, 3):
        raise DatasetError(f"data.split={split}: HMDB51 has splits 1, 2 and 3")
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())
    if not files:
        raise DatasetError(f"{folder}: no HMDB51 split files '*{suffix}' (set data.annotations)")
    by_class = {p.name[: -len(suffix)]: p for p in files}
    class_names = _hmdb51_class_order(folder, sorted(by_class))
    train, test = [], []
    for cls in class_names:
        path = by_class[cls]
        for n, line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{path}:{n}: expected '<clip>.avi <0|1|2>', got {line!r}")
            if parts[1] == "1":
                train.append((cls, parts[0]))
            elif parts[1] == "2":
                test.append((cls, parts[0]))
    return class_names, train, test


def _hmdb51_class_order(folder: Path, found: list[str]) -> list[str]:
    """The order of ``class_list.txt`` when the split folder has one (and it names the same classes), else sorted."""
    listed = folder / "class_list.txt"
    if not listed.is_file():
        return found
    names = [line for _, line in _lines(listed)]
    if sorted(names) != found:
        raise DatasetError(f"{listed}: names other classes than the *_test_split files ({len(names)} vs {len(found)})")
    return names


def hmdb51_group(file_name: str, class_name: str) -> str:
    """The source movie of an HMDB51 clip: the stem before ``_<class>_<tags>_<n>`` (the stem if no match)."""
    stem = Path(file_name).stem
    m = re.match(rf"^(.*)_{re.escape(class_name)}{_HMDB_TAGS}", stem)
    return m.group(1) if m else stem


def _hmdb51_lists(root: Path, split: int, annotations: str | os.PathLike | None) -> SplitLists:
    if annotations is not None:
        ann = Path(annotations)
    else:
        candidates = [root / "testTrainMulti_7030_splits", root / "splits", root]
        ann = next((c for c in candidates if any(c.glob(f"*_test_split{split}.txt"))), candidates[0])
    class_names, train, test = parse_hmdb51_splits(ann, split)
    index = {name: i for i, name in enumerate(class_names)}
    stems: dict[str, dict[str, str]] = {}

    def resolve(cls: str, name: str) -> str:
        exact = root / cls / name
        if exact.exists():
            return str(exact.absolute())
        if cls not in stems:  # same clip under another video extension (e.g. re-encoded to .mp4)
            folder = root / cls
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            stems[cls] = {p.stem: p.name for p in files if p.suffix.lower() in VIDEO_EXTENSIONS}
        return str((root / cls / stems[cls].get(Path(name).stem, name)).absolute())

    def entries(items: list[tuple[str, str]]) -> list[SplitEntry]:
        return [
            SplitEntry(path=resolve(c, f), label=index[c], video_id=f"{c}/{f}", group=hmdb51_group(f, c))
            for c, f in items
        ]

    return SplitLists(class_names=class_names, train=entries(train), test=entries(test))


# -------------------------------------------------------------------------------------------------- Kinetics


def read_kinetics_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a Kinetics annotation CSV (one file, or every ``*.csv`` in a folder), with the columns checked.

    Each row is a dict of the CSV's columns (stripped) plus ``"_where"``: ``"<file>:<line>"`` for error messages.
    """
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"{path}: no Kinetics annotation CSV found (set data.annotations)")
    rows = []
    for f in files:
        try:
            with open(f, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in _KINETICS_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise DatasetError(
                        f"{f}: missing column(s) {', '.join(missing)} (need {','.join(_KINETICS_COLUMNS)})"
                    )
                for n, row in enumerate(reader, 2):
                    row = {k: (v or "").strip() for k, v in row.items() if k is not None}
                    row["_where"] = f"{f}:{n}"
                    rows.append(row)
        except FileNotFoundError:
            raise DatasetError(f"{f}: Kinetics annotation CSV not found") from None
    return rows


def _kinetics_lists(
    root: Path, annotations: str | os.PathLike | None, label_map: Sequence[str] | None = None
) -> SplitLists:
    if annotations is not None:
        ann = Path(annotations)
    else:
        ann = root / "annotations" if (root / "annotations").is_dir() else root
    rows = [r for r in read_kinetics_csv(ann) if r["label"]]
    if not rows:
        raise DatasetError(f"{ann}: no labelled rows in the Kinetics CSV")
    class_names = _fixed_classes((r["label"] for r in rows), label_map, str(ann))
    index = {name: i for i, name in enumerate(class_names)}
    files = _video_files_by_stem(root)
    sides: dict[str, list[SplitEntry]] = {"train": [], "val": [], "test": []}
    for r in rows:
        side = "val" if r["split"].lower() in _KINETICS_VAL_NAMES else r["split"].lower()
        if side not in sides:
            raise DatasetError(f"{r['_where']}: split {r['split']!r} is not train, val/validate or test")
        try:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
        except ValueError:
            raise DatasetError(f"{r['_where']}: time_start/time_end must be numbers") from None
        ytid = r["youtube_id"]
        name = f"{ytid}_{start:06d}_{end:06d}"
        path = files.get(name) or files.get(ytid) or root / r["split"] / r["label"] / f"{name}.mp4"
        video_id = Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else name
        sides[side].append(
            SplitEntry(path=str(Path(path).absolute()), label=index[r["label"]], video_id=video_id, group=ytid)
        )
    if sides["test"]:
        return SplitLists(class_names, sides["train"], sides["test"], sides["val"] or None)
    return SplitLists(class_names, sides["train"], sides["val"], None)


def _video_files_by_stem(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                found.setdefault(p.stem, p)
    return found


# ---------------------------------------------------------------------------------------------------- folder


def folder_group(class_name: str, relpath: str) -> str:
    """``<class>/<stem without a trailing clip number>``; UCF-style ``..._gXX_cYY`` gives ``..._gXX``."""
    stem = Path(relpath).stem
    prefix = re.sub(r"[_\-. ]*(?:c|clip|part|take)?\d+$", "", stem, flags=re.IGNORECASE)
    return f"{class_name}/{prefix or stem}"


def _folder_lists(root: Path, test_fraction: float, label_map: Sequence[str] | None = None) -> SplitLists:
    if (root / "train").is_dir() and (root / "test").is_dir():
        sides = {s: _scan_class_tree(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
        class_names = _fixed_classes(set().union(*(set(v) for v in sides.values())), label_map, str(root))
        mk = _folder_entries(root, class_names)
        return SplitLists(
            class_names,
            mk(sides["train"], "train"),
            mk(sides["test"], "test"),
            mk(sides["val"], "val") if "val" in sides else None,
        )
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction={test_fraction} must be in (0, 1)")
    tree = _scan_class_tree(root)
    class_names = _fixed_classes(tree, label_map, str(root))
    entries = _folder_entries(root, class_names)(tree, "")
    train, test = _hash_split_per_class(entries, test_fraction)
    return SplitLists(class_names, train, test, None)


def _scan_class_tree(base: Path) -> dict[str, list[Path]]:
    tree: dict[str, list[Path]] = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if videos:
            tree[d.name] = videos
    if not tree:
        raise DatasetError(f"{base}: no class folders with videos ({', '.join(VIDEO_EXTENSIONS)})")
    return tree


def _folder_entries(root: Path, class_names: list[str]) -> Callable[[dict[str, list[Path]], str], list[SplitEntry]]:
    index = {name: i for i, name in enumerate(class_names)}

    def make(tree: dict[str, list[Path]], side: str) -> list[SplitEntry]:
        out = []
        for cls, videos in tree.items():
            for p in videos:
                rel = p.relative_to(root).as_posix()
                within = p.relative_to(root / side / cls if side else root / cls).as_posix()
                out.append(
                    SplitEntry(path=str(p.absolute()), label=index[cls], video_id=rel, group=folder_group(cls, within))
                )
        return out

    return make


def _hash_split_per_class(entries: list[SplitEntry], fraction: float) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """Per class, whole groups in SHA-256 order go to test until ``fraction`` of the class is reached."""
    test_groups: set[str] = set()
    by_class: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in entries:
        by_class[e.label][e.group] += 1
    for groups in by_class.values():
        target = round(fraction * sum(groups.values()))
        order = sorted(groups, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
        count = 0
        for g in order[:-1]:  # at least one group stays in train
            if count >= max(target, 1):
                break
            test_groups.add(g)
            count += groups[g]
    train = [e for e in entries if e.group not in test_groups]
    test = [e for e in entries if e.group in test_groups]
    return train, test

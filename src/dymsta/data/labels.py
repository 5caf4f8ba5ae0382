"""Label maps: class names and their ids, in the two file formats other video tools read and write.

- ``labels.txt``: one class name per line, line ``n`` (from 0) is class ``n`` -- MMAction2's ``label_map_*.txt``.
- ``labels.json``: ``{"name": id, ...}`` -- SlowFast's and PyTorchVideo's ``kinetics_classnames.json``. Names
  wrapped in literal double quotes (``"\\"abseiling\\""``, as PyTorchVideo's file has them) are unwrapped.

The format follows the file's suffix. Both are untrusted input: read as text or JSON (never pickle), size-capped,
with every problem a one-line :class:`LabelMapError` naming the file (and line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from dymsta.data.splits import DatasetError
from dymsta.utils import atomic_write_text

__all__ = ["LABEL_MAP_SUFFIXES", "LabelMapError", "read_label_map", "write_label_map"]

LABEL_MAP_SUFFIXES = (".txt", ".json")
_MAX_BYTES = 16 * 1024 * 1024  # a label map of 100,000 classes is ~2 MB; anything far larger is not one


class LabelMapError(DatasetError):
    """A label-map file is missing or malformed (one line naming the file)."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in LABEL_MAP_SUFFIXES:
        raise LabelMapError(f"{path}: a label map is labels.txt (one class per line) or labels.json ({{name: id}})")
    return suffix


def read_label_map(path: str | os.PathLike) -> list[str]:
    """Class names in id order from ``labels.txt`` or ``labels.json``.

    Raises:
        LabelMapError: unknown suffix, missing/unreadable/oversized file, an empty name or line, a duplicate name,
            or (json) ids that are not the integers ``0..K-1`` each once.
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise LabelMapError(f"{path}: {size} bytes is too large for a label map")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelMapError(f"{path}: label map not found") from None
    except UnicodeDecodeError:
        raise LabelMapError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise LabelMapError(f"{path}: cannot read label map ({e.strerror or e})") from None
    names = _parse_json(path, text) if suffix == ".json" else _parse_txt(path, text)
    if not names:
        raise LabelMapError(f"{path}: no class names")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise LabelMapError(f"{path}: class {name!r} appears twice (ids {seen[name]} and {i})")
        seen[name] = i
    return names


def _parse_txt(path: Path, text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line:
            raise LabelMapError(f"{path}:{n}: empty line (line n is class n-1, so a blank line would shift the ids)")
    return lines


def _parse_json(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise LabelMapError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LabelMapError(f'{path}: expected an object {{"class name": id, ...}}, got {type(data).__name__}')
    by_id: dict[int, str] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise LabelMapError(f"{path}: the id of {key!r} must be an integer, got {value!r}")
        name = key.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].strip()  # PyTorchVideo's kinetics_classnames.json quotes every name
        if not name:
            raise LabelMapError(f"{path}: an empty class name (id {value})")
        if value in by_id:
            raise LabelMapError(f"{path}: id {value} is given to both {by_id[value]!r} and {name!r}")
        by_id[value] = name
    if sorted(by_id) != list(range(len(by_id))):
        missing = sorted(set(range(len(by_id))) - set(by_id))
        raise LabelMapError(
            f"{path}: ids must be 0..{len(by_id) - 1} each once"
            + (f" (missing {missing[0]})" if missing else f" (found {max(by_id)})")
        )
    return [by_id[i] for i in range(len(by_id))]


def write_label_map(path: str | os.PathLike, class_names: Sequence[str]) -> Path:
    """Write ``class_names`` (id order) as ``labels.txt`` or ``labels.json`` (by the suffix), atomically.

    Raises:
        LabelMapError: unknown suffix, or names that the format cannot hold (empty, duplicate, a line break).
    """
    path = Path(path)
    suffix = _suffix(path)
    names = [str(c) for c in class_names]
    bad = next((c for c in names if not c.strip() or "\n" in c or "\r" in c or c != c.strip()), None)
    if bad is not None:
        raise LabelMapError(f"{path}: class name {bad!r} cannot be stored (empty, padded, or a line break)")
    if len(set(names)) != len(names):
        raise LabelMapError(f"{path}: duplicate class names")
    if suffix == ".json":
        text = json.dumps({name: i for i, name in enumerate(names)}, indent=2, ensure_ascii=False) + "\n"
    else:
        text = "".join(f"{name}\n" for name in names)
    atomic_write_text(path, text)
    return path

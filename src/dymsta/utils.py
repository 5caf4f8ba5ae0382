"""Small helpers shared by every package: atomic file writes and logging."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "get_logger", "progress"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash (or SIGKILL) inside the block leaves ``path`` untouched: either the old file or none,
    never a half-written one. The temporary file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush file contents to disk before the rename
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def get_logger(name: str) -> logging.Logger:
    """The package logger for ``name`` (configured once by the CLI, silent by default in a library)."""
    return logging.getLogger(name)


def progress(iterable: Iterable, *, enabled: bool = True, log_every: float = 30.0, **kwargs: Any) -> Iterable:
    """A tqdm progress bar on a terminal; off a terminal (CI, logs), one INFO line every ``log_every`` seconds
    (``desc: done/total, rate/s``) for loops that run that long; nothing when ``enabled`` is False."""
    import sys

    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, dynamic_ncols=True, **kwargs)
    total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
    return _logged(
        iterable, desc=kwargs.get("desc", "progress"), unit=kwargs.get("unit", "it"), every=log_every, total=total
    )


def _logged(iterable: Iterable, *, desc: str, unit: str, every: float, total: int | None) -> Iterator:
    import time

    log = logging.getLogger("dymsta.progress")
    start = last = time.perf_counter()
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every:
            last = now
            of = f"/{total}" if total is not None else ""
            log.info("%s: %d%s %s, %.2f %s/s", desc, i, of, unit, i / (now - start), unit)

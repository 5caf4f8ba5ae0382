"""Command line entry point (filled in by the engine work)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("dymsta: command line not built yet")

"""`python -m dymsta ...` (also what `torchrun -m dymsta` runs)."""

from dymsta.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

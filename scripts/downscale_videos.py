"""Copy a video dataset tree with every video re-encoded at a small size (H.264, PyAV's bundled FFmpeg).

Used to move ucf101-mini (197 MB) to a GPU machine whose upload limit is 64 MiB, for the R(2+1)D-18 baseline,
which reads 112 px crops of a 128 px short side anyway:

    python scripts/downscale_videos.py ../shared/data/ucf101-mini .devdata/ucf101-mini-128 --short-side 128

Non-video files (split lists) are copied as they are; the frame rate and frame count are kept.
"""

from __future__ import annotations

import argparse
import shutil
from fractions import Fraction
from pathlib import Path

import av

VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".webm", ".mov"}


def downscale(src: Path, dst: Path, short_side: int) -> None:
    """Re-encode ``src`` to ``dst`` (mp4 container kept under the original name) with the short side scaled."""
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(w, h)
        ow, oh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
        tmp = dst.with_name(dst.name + ".part")
        with av.open(str(tmp), "w", format="mp4") as out:
            enc = out.add_stream("libx264", rate=rate)
            enc.width, enc.height, enc.pix_fmt = ow, oh, "yuv420p"
            enc.options = {"crf": "30", "preset": "veryfast"}
            for frame in inp.decode(stream):
                img = frame.reformat(width=ow, height=oh, format="yuv420p")
                img.pts = None
                for packet in enc.encode(img):
                    out.mux(packet)
            for packet in enc.encode():
                out.mux(packet)
    tmp.replace(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--short-side", type=int, default=128)
    args = ap.parse_args()
    files = sorted(p for p in args.src.rglob("*") if p.is_file())
    for i, path in enumerate(files):
        target = args.dst / path.relative_to(args.src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES:
            downscale(path, target, args.short_side)
        else:
            shutil.copy2(path, target)
        if i % 50 == 0:
            print(f"{i}/{len(files)} {path.name}", flush=True)


if __name__ == "__main__":
    main()

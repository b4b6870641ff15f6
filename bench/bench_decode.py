"""JPEG decode + resize rate per CPU core, full decode vs `--fast-decode` (reduced DCT scale).

Extraction on a GPU is fed by data-loader processes; this shows how many cores keep a model
busy (CLIP ViT-L/14 runs ~2,260 img/s on an H100, see ../shared/NOTES.md). Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from precompute.sources import _open_rgb  # noqa: E402


def photo_like(side_w: int, side_h: int, seed: int) -> Image.Image:
    """Smooth colour fields plus mild noise: compresses like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side_h, 0:side_w] / max(side_w, side_h)
    rgb = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)), np.cos(y * rng.uniform(2, 9)),
                    np.sin((x + y) * rng.uniform(2, 9))], -1)
    rgb = (rgb * 0.5 + 0.5) * 255 + rng.normal(0, 8, (side_h, side_w, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def rate(files: list[Path], target: int, draft: bool) -> float:
    t0 = time.perf_counter()
    for f in files:
        _open_rgb(f, target if draft else None).resize((target, target), resample=Image.BICUBIC)
    return len(files) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--sizes", default="500x375,1024x768", help="JPEG sizes, comma-separated WxH")
    p.add_argument("--target", type=int, default=224, help="model input side")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    rows = []
    for spec in args.sizes.split(","):
        w, h = (int(v) for v in spec.split("x"))
        files = []
        for i in range(args.n):
            f = tmp / f"{spec}-{i}.jpg"
            photo_like(w, h, i).save(f, quality=90)
            files.append(f)
        rate(files[:10], args.target, False)  # warm the page cache and PIL
        full, fast = rate(files, args.target, False), rate(files, args.target, True)
        rows.append([f"{w}x{h} JPEG -> {args.target}px", f"{full:,.0f}", f"{fast:,.0f}", f"{fast / full:.1f}x"])
    print(machine())
    print_table(["images", "full decode + resize (img/s/core)", "--fast-decode (img/s/core)", "speed-up"], rows)


if __name__ == "__main__":
    main()

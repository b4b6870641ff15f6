"""Dataset preparation (thumbnails + samples.parquet) of 1024x768 JPEGs: the old path (one process,
full-resolution decode, then thumbnail) against `prepare_dataset` (thumbnails made in the decoding
workers, JPEGs decoded at the smallest DCT scale still >= 160 px)."""

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
from precompute.dataset import DatasetConfig, prepare_dataset, thumbnail_webp  # noqa: E402
from precompute.sources import open_source  # noqa: E402


def write_photos(root: Path, n: int) -> Path:
    root.mkdir()
    y, x = np.mgrid[0:768, 0:1024] / 64.0
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = np.stack([np.sin(x + i), np.cos(y - i), np.sin((x + y) / 2)], axis=-1) * 100 + 127 + rng.normal(0, 12, (768, 1024, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_photos(Path(tmp) / "photos", args.n)
        source = open_source(str(folder))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(len(source.records)):  # the previous path: full decode in this process
            thumbnail_webp(source.load(i))
        old, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append(["one process, full-resolution decode (before)", args.n, f"{args.n / old:.0f}", f"{1000 * cpu / args.n:.1f}"])
        for workers in (0, -1):
            t0, c0 = time.perf_counter(), time.process_time()
            prepare_dataset(DatasetConfig(source=str(folder), out=str(Path(tmp) / f"out{workers}"), num_workers=workers))
            new, cpu = time.perf_counter() - t0, time.process_time() - c0
            label = "reduced-scale decode, in this process" if workers == 0 else "reduced-scale decode, decoding workers (auto)"
            rows.append([label, args.n, f"{args.n / new:.0f}", f"{1000 * cpu / args.n:.1f}" if workers == 0 else "-"])
    print(machine())
    print_table(["dataset preparation, 1024x768 JPEG", "images", "img/s", "CPU ms/img in this process"], rows)


if __name__ == "__main__":
    main()

"""Static-site publish benchmark: a large synthetic index published cold, unchanged, and re-rendered.

    python bench/bench_publish.py                          # 65,536 features x 64 top, 20,000 samples
    python bench/bench_publish.py --features 4096 --samples 5000   # quick

Builds the index with bench_app's SQL builder (the same contract-shaped rows its load test serves),
writes one small WebP thumbnail per sample, then times `precompute.publish.publish`:
1. cold: every page, JSON twin, card, sample page, search shard and thumbnail written;
2. again: same index, options and code, so nothing is rendered or written;
3. with --rerender: an option that changes no page (the size limit) forces rendering; files are
   compared by hash and none is written.
Prints one table (pages/s counts feature + sample pages) with the site's size and file count, the
cold run's stages (wall time; worker CPU time for feature and for sample pages) and the search
and table index sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("SAESCOPE_PROGRESS", "0")

import precompute.publish as publish_mod  # noqa: E402
from bench.bench_app import SAE, build_index, write_thumbs  # noqa: E402
from bench.common import print_table  # noqa: E402
from precompute.publish import PublishConfig, fmt_bytes, publish  # noqa: E402


def timed(cfg: PublishConfig):
    t0 = time.perf_counter()
    res = publish(cfg)
    return res, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=65_536)
    ap.add_argument("--top", type=int, default=64)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--game-rounds", type=int, default=20)
    ap.add_argument("--rerender", action="store_true", help="a third run that renders everything and writes nothing")
    ap.add_argument("--dir", type=Path, default=None, help="reuse/build the index and site here")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-publish-"))
    index = root / "bench.duckdb"
    if not index.exists():
        t0 = time.perf_counter()
        build_index(index, args.features, args.top, args.samples, 16)
        print(f"built {index} ({index.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    write_thumbs(root / "thumbs", args.samples)
    cfg = PublishConfig(index=index, out=root / "site", saes=(SAE,), workers=args.workers, game_rounds=args.game_rounds)
    n_pages = args.features + args.samples
    rows = []
    # Peers edit the app while this runs; its code is left out of the key so that "again" measures a
    # re-publish from an unchanged checkout (the index file and the options still count).
    publish_mod.inputs_key = lambda c, static: "bench:" + str(sorted(static)) + str(c.index.stat().st_mtime_ns) + repr(c)
    runs = [("cold", cfg), ("again", cfg)]
    if args.rerender:
        runs.append(("re-rendered, nothing changed", cfg.__class__(**{**cfg.__dict__, "size_limit": cfg.size_limit + 1})))
    for label, c in runs:
        res, dt = timed(c)
        if label == "cold":
            stages = res.stages
        if label == "again":
            label = "unchanged: skipped" if res.skipped else "unchanged, but re-rendered"
        rate = f"{n_pages / dt:,.0f}" if not res.skipped else "–"
        rows.append([label, f"{dt:.1f}", rate, f"{len(res.written):,}", f"{res.n_files:,}", fmt_bytes(res.n_bytes)])
    print(f"\n{args.features:,} features x {args.top} top samples, {args.samples:,} sample pages, "
          f"{args.workers} worker processes, {os.cpu_count()} cores")
    print_table(["publish", "wall s", "pages/s", "files written", "files", "site size"], rows)
    print("stages of the cold publish: " + "; ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    search = sorted((root / "site" / "sae" / SAE / "search").iterdir(), key=lambda p: -p.stat().st_size)
    print(f"search index: {fmt_bytes(sum(p.stat().st_size for p in search))} in {len(search)} files; "
          f"largest {search[0].name} {fmt_bytes(search[0].stat().st_size)}; of it table.json "
          f"{fmt_bytes((root / 'site' / 'sae' / SAE / 'search' / 'table.json').stat().st_size)}")
    print(f"machine load (uptime): {os.getloadavg()}")


if __name__ == "__main__":
    main()

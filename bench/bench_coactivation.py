"""What the co-activation pair counts cost the index scan: scan_features without them, with the
dense counter and with the sparse one (`precompute.coactivation`), on a synthetic store through a
TopK SAE; prints a table with the pairs kept and their bound.

    python bench/bench_coactivation.py --tokens 50000 --d-sae 1024 4096 8192
    python bench/bench_coactivation.py --tokens 200000 --d-sae 65536 --modes off sparse
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import precompute.coactivation as co  # noqa: E402
import precompute.scan as scan_mod  # noqa: E402
from bench.bench_index import synthetic_store  # noqa: E402
from bench.common import machine, print_table  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402


class _NoCounts:
    """Stands in for a pair counter: the scan without pair counts."""

    def __init__(self, d_sae: int, device):
        self.d_sae = d_sae

    def update(self, code, n_rows: int) -> None:
        pass

    def pairs(self) -> co.PairCounts:
        empty = np.zeros(0, dtype=np.int64)
        return co.PairCounts(self.d_sae, empty, empty, np.zeros(self.d_sae, dtype=np.int64))


COUNTERS = {"off": _NoCounts, "dense": co.CoactivationCounts, "sparse": co.SparsePairCounts}


def timed_scan(sae, store, chunk: int, device: str, mode: str) -> tuple[float, co.PairCounts]:
    saved = scan_mod.pair_counter
    scan_mod.pair_counter = COUNTERS[mode]
    try:
        t0 = time.perf_counter()
        result = scan_mod.scan_features(sae, store, 64, 16, chunk, device)
        return time.perf_counter() - t0, result.co_counts
    finally:
        scan_mod.pair_counter = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=50_000)
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--d-sae", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--modes", nargs="+", default=["off", "dense", "sparse"], choices=list(COUNTERS),
                   help="the first is the baseline of the cost column")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    store = synthetic_store(Path(tempfile.mkdtemp(prefix="bench-coact-")) / "store", args.tokens, args.d_in)
    rows = []
    for d_sae in args.d_sae:
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=args.k, d_in=args.d_in, d_sae=d_sae)).to(args.device)
        timed_scan(sae, store, args.chunk, args.device, "off")  # warm-up
        base = None
        for mode in args.modes:
            secs, pairs = timed_scan(sae, store, args.chunk, args.device, mode)
            base = secs if base is None else base
            memory = d_sae * d_sae * 4 if mode == "dense" else len(pairs.keys) * 12
            rows.append([d_sae, mode, f"{secs:.2f} s", f"{(secs - base) / base * 100:+.0f}%", f"{len(pairs.keys):,}",
                         f"{memory / 2**20:.0f} MB", pairs.undercount])
    print(machine())
    print(f"{args.tokens:,} tokens, d_in {args.d_in}, TopK k={args.k}, chunk {args.chunk}, {torch.get_num_threads()} threads, "
          f"sparse pair limit {co.SparsePairCounts.MAX_PAIRS:,}")
    print_table(["d_sae", "pair counts", "scan", "cost", "pairs kept", "count memory", "undercount bound"], rows)


if __name__ == "__main__":
    main()

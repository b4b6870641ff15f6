"""What the co-activation pair counts cost the index scan: scan_features with and without them
(`precompute.coactivation`) on a synthetic store through a TopK SAE; prints a table.

    python bench/bench_coactivation.py --tokens 50000 --d-sae 1024 4096 8192
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import precompute.scan as scan_mod  # noqa: E402
from bench.bench_index import synthetic_store  # noqa: E402
from bench.common import machine, print_table  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402


def timed_scan(sae, store, chunk: int, device: str, coact: bool) -> float:
    limit = scan_mod.COACT_MAX_FEATURES
    scan_mod.COACT_MAX_FEATURES = limit if coact else 0
    try:
        t0 = time.perf_counter()
        scan_mod.scan_features(sae, store, 64, 16, chunk, device)
        return time.perf_counter() - t0
    finally:
        scan_mod.COACT_MAX_FEATURES = limit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=50_000)
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--d-sae", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    store = synthetic_store(Path(tempfile.mkdtemp(prefix="bench-coact-")) / "store", args.tokens, args.d_in)
    rows = []
    for d_sae in args.d_sae:
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=args.k, d_in=args.d_in, d_sae=d_sae)).to(args.device)
        timed_scan(sae, store, args.chunk, args.device, False)  # warm-up
        off = timed_scan(sae, store, args.chunk, args.device, False)
        on = timed_scan(sae, store, args.chunk, args.device, True)
        rows.append([d_sae, f"{off:.2f} s", f"{on:.2f} s", f"{(on - off) / off * 100:+.0f}%",
                     f"{d_sae * d_sae * 4 / 2**20:.0f} MB"])
    print(machine())
    print(f"{args.tokens:,} tokens, d_in {args.d_in}, TopK k={args.k}, chunk {args.chunk}, {torch.get_num_threads()} threads")
    print_table(["d_sae", "scan without pair counts", "scan with", "cost", "pair counts (int32)"], rows)


if __name__ == "__main__":
    main()

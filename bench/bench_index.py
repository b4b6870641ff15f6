"""Index scan throughput and memory: streams a synthetic store through a TopK SAE; prints a table.

Defaults are CPU-sized. The issue's GPU target: `--d-in 1024 --d-sae 65536 --k 32 --tokens 1000000`
on CUDA should reach >= 2M tokens/s (a naive dense scan does ~466k tokens/s on an H100).
Peak RSS shows the memory ceiling (the store is memory-mapped, never loaded whole).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from precompute.scan import scan_features, scan_quantiles  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402
from sae_core.store import ActivationStore, StoreWriter  # noqa: E402


class AnonPeak:
    """Peak anonymous memory (RssAnon), sampled: ru_maxrss also counts the memory-mapped store's
    file pages, which the kernel can drop at any time and which grow with the store."""

    def __init__(self, every_s: float = 0.2):
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1e6


def synthetic_store(dpath: Path, n_tokens: int, d_in: int, shard: int = 262144) -> ActivationStore:
    writer = StoreWriter(dpath, {"dataset_id": "bench", "model": "synthetic", "layer": "x", "token_selection": "pooled",
                                 "tokens_per_sample": 1, "grid": None, "d_in": d_in, "dtype": "bfloat16"})
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n_tokens, shard):
        n = min(shard, n_tokens - start)
        writer.append(torch.randn(n, d_in, generator=gen), np.arange(start, start + n))
    writer.finish()
    return ActivationStore(dpath)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--top-n", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                   help="encoder precisions to run; the first is the reference for top-N agreement")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    t0 = time.perf_counter()
    store = synthetic_store(tmp / "store", args.tokens, args.d_in)
    write_s = time.perf_counter() - t0
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=args.k, d_in=args.d_in, d_sae=args.d_sae)).to(args.device)
    cuda = torch.device(args.device).type == "cuda"
    # Warm-up outside the timings: CUDA context, kernels' first launches, the weights' upload.
    warm = ActivationStore(synthetic_store(tmp / "warm", 2 * args.chunk, args.d_in).dpath)
    for precision in args.precision:
        scan_features(sae, warm, top_n=args.top_n, chunk_samples=args.chunk, device=args.device, precision=precision)
    rows, reference = [], None
    for precision in args.precision:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        anon = AnonPeak()
        t0 = time.perf_counter()
        scan = scan_features(sae, store, top_n=args.top_n, chunk_samples=args.chunk, device=args.device, precision=precision)
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scan_quantiles(sae, store, scan.max_scores, chunk_samples=args.chunk, device=args.device, precision=precision)
        quant_s = time.perf_counter() - t0
        anon_gb = anon.stop()
        reference = reference or scan
        filled = reference.top_ids >= 0
        agree = ((scan.top_ids == reference.top_ids) & filled).sum() / max(filled.sum(), 1)
        rows.append([f"{args.tokens:,} tokens, d={args.d_in}, {args.d_sae:,} latents, k={args.k}, top {args.top_n}", precision,
                     f"{args.tokens / scan_s:,.0f} tokens/s", f"{args.tokens / quant_s:,.0f} tokens/s", f"{agree:.2%}",
                     f"{anon_gb:.2f} GB", f"{torch.cuda.max_memory_allocated() / 1e9:.2f} GB" if cuda else "-"])
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(machine())
    print(f"store write {write_s:.1f} s; peak RSS including the memory-mapped store {peak_gb:.2f} GB")
    print_table(["config", "encoder", "scan (top-N + stats)", "quantile pass", f"top-N equal to {args.precision[0]}",
                 "peak anon. memory", "peak GPU memory"], rows)


if __name__ == "__main__":
    main()

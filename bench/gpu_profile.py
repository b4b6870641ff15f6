"""torch.profiler tables of the two GPU paths that miss their targets (#18): the TopK training
step with AuxK (d=1024, 65,536 latents, k=32, batch 8,192) and the index scan of one chunk."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_index import synthetic_store  # noqa: E402
from bench.bench_train import saescope_step_fn  # noqa: E402
from precompute.scan import scan_features  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402
from sae_core.store import ActivationStore  # noqa: E402


def table(prof, n=18):
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=n, max_name_column_width=60))


def main() -> None:
    step = saescope_step_fn(1024, 65536, 32, "cuda", auxk=True)
    x = torch.randn(8192, 1024, device="cuda")
    for _ in range(3):
        step(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step(x)
        torch.cuda.synchronize()
    print("### training step with AuxK, 5 steps")
    table(prof)
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(synthetic_store(Path(tmp) / "s", 131072, 1024).dpath)
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=32, d_in=1024, d_sae=65536)).to("cuda")
        scan_features(sae, store, top_n=64, chunk_samples=65536, device="cuda", precision="bfloat16")
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            scan_features(sae, store, top_n=64, chunk_samples=65536, device="cuda", precision="bfloat16")
            torch.cuda.synchronize()
        print("### index scan, 131,072 tokens, bf16 candidates")
        table(prof)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()

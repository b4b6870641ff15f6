"""Training throughput (tokens/s) of saescope's SAE step, on CPU or CUDA; prints a table.

CPU: the demo configurations. CUDA: the three configurations of ../shared/NOTES.md (sparsify's
anchors: 459k/275k tokens/s without/with AuxK at d=1024, 65,536 latents, k=32 on an H100).
`--sparsify` also times EleutherAI sparsify's step in the same run when it is installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402

CPU_CONFIGS = [("demo head", 1280, 512, 16, 256), ("demo patches", 320, 1024, 16, 512), ("d=768 x8, k=32", 768, 6144, 32, 4096)]
GPU_CONFIGS = [("d=1024, 65,536, k=32", 1024, 65536, 32, 8192), ("d=768, 24,576, k=64", 768, 24576, 64, 8192),
               ("d=1152, 36,864, k=64", 1152, 36864, 64, 8192)]


def time_steps(d_in: int, d_sae: int, k: int, batch: int, auxk: bool, device: str, n_steps: int) -> float:
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=k, d_in=d_in, d_sae=d_sae)).to(device)
    opt = torch.optim.AdamW(sae.parameters(), lr=3e-4)
    x = torch.randn(batch, d_in, device=device)
    dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
    if auxk:
        dead[: d_sae // 2] = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            out = sae(x, dead if auxk else None)
        out.loss.backward()
        sae.remove_parallel_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * n_steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    configs = GPU_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    rows = []
    for name, d_in, d_sae, k, batch in configs:
        plain = time_steps(d_in, d_sae, k, batch, False, args.device, args.steps)
        aux = time_steps(d_in, d_sae, k, batch, True, args.device, args.steps)
        rows.append([name, batch, f"{plain:,.0f}", f"{aux:,.0f}"])
    print(machine())
    print_table(["config", "batch", "tokens/s", "tokens/s with AuxK"], rows)


if __name__ == "__main__":
    main()

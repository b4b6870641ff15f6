"""Training throughput (tokens/s) of saescope's SAE step, on CPU or CUDA; prints a table.

CPU: the demo configurations. CUDA: the three configurations of ../shared/NOTES.md (sparsify's
anchors: 459k/275k tokens/s without/with AuxK at d=1024, 65,536 latents, k=32 on an H100).
`--sparsify` also times EleutherAI sparsify's step on identical batches in the same run, the two
libraries' steps interleaved one by one (medians; CPU time on a CPU), so that a shared machine's
load cancels in the ratio.
`--gpu-shape` times the d=1024, 65,536-latent, k=32 shape on a CPU at a small batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from sae_core.config import SAEConfig  # noqa: E402
from sae_core.model import SparseAutoencoder  # noqa: E402
from sae_core.training import make_optimizer  # noqa: E402

CPU_CONFIGS = [("demo head", 1280, 512, 16, 256), ("demo patches", 320, 1024, 16, 512), ("d=768 x8, k=32", 768, 6144, 32, 4096)]
GPU_CONFIGS = [("d=1024, 65,536, k=32", 1024, 65536, 32, 8192), ("d=768, 24,576, k=64", 768, 24576, 64, 8192),
               ("d=1152, 36,864, k=64", 1152, 36864, 64, 8192)]
GPU_SHAPE_ON_CPU = ("d=1024, 65,536, k=32 (GPU shape)", 1024, 65536, 32, 256)


class SyntheticStream:
    """Batches drawn from a fixed sparse dictionary on the device, so data loading is not measured
    and both libraries see identical batches (FVU after the same tokens is comparable)."""

    def __init__(self, d_in: int, batch: int, device: str, n_atoms: int = 0, active: int = 32, seed: int = 0):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n_atoms = n_atoms or 4 * d_in
        self.atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d_in, generator=gen), dim=-1).to(device)
        self.batch, self.active, self.device, self.seed = batch, active, device, seed

    def __call__(self, step: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + step)
        idx = torch.randint(0, self.atoms.shape[0], (self.batch, self.active), generator=gen, device=self.device)
        vals = torch.rand(self.batch, self.active, generator=gen, device=self.device) * 2
        return torch.nn.functional.embedding_bag(idx, self.atoms, per_sample_weights=vals, mode="sum")


def _update(loss: torch.Tensor, sae: torch.nn.Module, opt, project_grad, renormalize) -> None:
    """The same optimizer step for both libraries: backward, projection, clipping, AdamW, renorm."""
    loss.backward()
    project_grad()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    renormalize()


def _step_setup(sae: torch.nn.Module, d_sae: int, device: str, auxk: bool):
    """What both libraries' steps share: saescope train's optimizer (fused AdamW), half the latents
    marked dead (for AuxK), autocast."""
    opt = make_optimizer(sae.parameters(), lr=3e-4)
    dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
    dead[: d_sae // 2] = auxk
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else torch.autocast("cpu", enabled=False)
    return opt, dead, autocast


def saescope_step_fn(d_in: int, d_sae: int, k: int, device: str, auxk: bool):
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=k, d_in=d_in, d_sae=d_sae, aux_coeff=1 / 32 if auxk else 0.0)).to(device)
    opt, dead, autocast = _step_setup(sae, d_sae, device, auxk)

    def step(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            out = sae(x, dead if auxk else None)
        _update(out.loss, sae, opt, sae.remove_parallel_grad, sae.normalize_decoder)
        return out.x_hat

    return step


def sparsify_step_fn(d_in: int, d_sae: int, k: int, device: str, auxk: bool):
    """EleutherAI sparsify's SparseCoder with its own loss terms, as its trainer uses them."""
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k), device=device)
    opt, dead, autocast = _step_setup(sae, d_sae, device, auxk)

    def step(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            out = sae(x, dead_mask=dead if auxk else None)
        _update(out.fvu + out.auxk_loss / 32, sae, opt, sae.remove_gradient_parallel_to_decoder_directions,
                sae.set_decoder_norm_to_unit_norm)
        return out.sae_out

    return step


def step_clock(device: str):
    """Seconds a step takes. On CUDA wall time after a synchronize; on a CPU the process's CPU time
    (time.process_time), which other jobs on a shared machine inflate far less than wall time."""
    if torch.device(device).type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return cuda_clock
    return time.process_time


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat.detach().float()).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def bench_config(libs, d_in: int, d_sae: int, k: int, batch: int, args) -> dict:
    """Median tokens/s of every (library, AuxK) step. The steps are interleaved one by one (A, B,
    C, D, A, B, ...), so load from other jobs on a shared machine falls on all of them alike; FVU
    of the last batch after the same tokens."""
    stream = SyntheticStream(d_in, batch, args.device)
    batches = [stream(3 + i) for i in range(8)]
    steps = {}
    for lib, make in libs:
        for auxk in (False, True):
            steps[lib, auxk] = step = make(d_in, d_sae, k, args.device, auxk)
            for i in range(3):  # warm-up on batches the timed steps never use
                step(stream(i))
    clock = step_clock(args.device)
    seconds = {key: [] for key in steps}
    last = {}
    for i in range(args.steps):
        for key, step in steps.items():
            t0 = clock()
            last[key] = step(batches[i % len(batches)])
            seconds[key].append(clock() - t0)
    x = batches[(args.steps - 1) % len(batches)]
    return {key: (batch / statistics.median(s), fvu(x, last[key])) for key, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind, interleaved (the median is reported)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the timed steps this many times (bench/gpu_session.sh passes 3)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sparsify", action="store_true", help="also time EleutherAI sparsify (pip install eai-sparsify)")
    p.add_argument("--gpu-shape", action="store_true", help="on CPU: only the d=1024, 65,536-latent, k=32 shape, at batch 256")
    p.add_argument("--only", default="", help="only configurations whose name contains this")
    args = p.parse_args()
    args.steps *= args.rounds
    configs = GPU_CONFIGS if torch.device(args.device).type == "cuda" else [GPU_SHAPE_ON_CPU] if args.gpu_shape else CPU_CONFIGS
    libs = [("saescope", saescope_step_fn)] + ([("sparsify", sparsify_step_fn)] if args.sparsify else [])
    rows = []
    n_tokens = 3 + args.steps
    for name, d_in, d_sae, k, batch in (c for c in configs if args.only in c[0]):
        res = bench_config(libs, d_in, d_sae, k, batch, args)
        for lib, _ in libs:
            ratio = [f"{res[lib, True][0] / res['sparsify', True][0]:.2f}x" if args.sparsify else "-"]
            rows.append([name, lib, batch, f"{res[lib, False][0]:,.0f}", f"{res[lib, True][0]:,.0f}", *ratio,
                         f"{res[lib, False][1]:.4f}", f"{res[lib, True][1]:.4f}"])
    print(machine(), f"· OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} · torch threads {torch.get_num_threads()}")
    clock = "wall time" if torch.device(args.device).type == "cuda" else "process CPU time"
    print(f"median step ({clock}) of {args.steps} interleaved steps per kind; FVU of the last batch after {n_tokens} steps")
    print_table(["config", "library", "batch", "tokens/s", "tokens/s with AuxK", "AuxK vs sparsify", "FVU", "FVU with AuxK"], rows)


if __name__ == "__main__":
    main()

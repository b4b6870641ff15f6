"""Training throughput (tokens/s) of saescope's SAE step, on CPU or CUDA; prints a table.

CPU: the demo configurations. CUDA: the three configurations of ../shared/NOTES.md (sparsify's
anchors: 459k/275k tokens/s without/with AuxK at d=1024, 65,536 latents, k=32 on an H100).
`--sparsify` also times EleutherAI sparsify's step on identical batches in the same run.
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
    """What both libraries' steps share: AdamW, half the latents marked dead (for AuxK), autocast."""
    opt = torch.optim.AdamW(sae.parameters(), lr=3e-4)
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


def run(step, stream: SyntheticStream, n_steps: int, device: str) -> tuple[float, float]:
    """(tokens/s over n_steps after 3 warm-up steps, FVU of the last batch)."""
    for i in range(3):
        step(stream(i))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    batches = [stream(3 + i) for i in range(min(n_steps, 8))]
    sync()
    t0 = time.perf_counter()
    for i in range(n_steps):
        x_hat = step(batches[i % len(batches)])
    sync()
    rate = stream.batch * n_steps / (time.perf_counter() - t0)
    x = batches[(n_steps - 1) % len(batches)]
    fvu = float((x - x_hat.float()).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return rate, fvu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sparsify", action="store_true", help="also time EleutherAI sparsify (pip install eai-sparsify)")
    args = p.parse_args()
    configs = GPU_CONFIGS if torch.device(args.device).type == "cuda" else CPU_CONFIGS
    libs = [("saescope", saescope_step_fn)] + ([("sparsify", sparsify_step_fn)] if args.sparsify else [])
    rows = []
    for name, d_in, d_sae, k, batch in configs:
        stream = SyntheticStream(d_in, batch, args.device)
        for lib, make in libs:
            plain, _ = run(make(d_in, d_sae, k, args.device, False), stream, args.steps, args.device)
            aux, fvu = run(make(d_in, d_sae, k, args.device, True), stream, args.steps, args.device)
            rows.append([name, lib, batch, f"{plain:,.0f}", f"{aux:,.0f}", f"{fvu:.4f}"])
    print(machine())
    print_table(["config", "library", "batch", "tokens/s", "tokens/s with AuxK", f"FVU after {args.steps + 3} steps"], rows)


if __name__ == "__main__":
    main()

"""Synthetic data shared by the sae_core tests: activations built from a known sparse dictionary.

Each sample is a non-negative combination of a few unit-norm atoms plus small Gaussian noise, so
an SAE that learns the data should find the atoms among its decoder rows.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from sae_core.store import StoreWriter

REPO = Path(__file__).resolve().parents[1]


def make_atoms(n_atoms: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """n_atoms random unit-norm directions [n_atoms, d_in]."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=gen)
    return atoms / atoms.norm(dim=-1, keepdim=True)


def sparse_mix(atoms: torch.Tensor, n: int, n_active: int = 4, noise: float = 0.01, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of exactly `n_active` atoms with magnitudes in [1, 2], plus noise; returns (x, codes)."""
    gen = torch.Generator().manual_seed(seed)
    n_atoms, d_in = atoms.shape
    idx = torch.rand(n, n_atoms, generator=gen).argsort(-1)[:, :n_active]
    mags = 1.0 + torch.rand(n, n_active, generator=gen)
    codes = torch.zeros(n, n_atoms).scatter_(1, idx, mags)
    x = codes @ atoms + noise * torch.randn(n, d_in, generator=gen)
    return x, codes


def write_store(
    dpath: str | Path,
    x: torch.Tensor,
    *,
    tokens_per_sample: int = 1,
    shard_samples: int = 4096,
    dtype: str = "float32",
    d_in: int | None = None,
    layer: str = "synthetic",
) -> Path:
    """Write rows x [n_tokens, d_in] as a complete activation store (T rows per sample)."""
    dpath = Path(dpath)
    d = int(x.shape[1]) if d_in is None else d_in
    T = tokens_per_sample
    header = {
        "dataset_id": "synthetic-000000000000", "dataset_dpath": "unused", "model": "synthetic", "model_revision": None,
        "layer": layer, "token_selection": "pooled" if T == 1 else "patches", "tokens_per_sample": T,
        "grid": None if T == 1 else [1, T], "d_in": d, "dtype": dtype, "fingerprint": "synthetic",
    }
    writer = StoreWriter(dpath, header)
    n_samples = x.shape[0] // T
    for start in range(0, n_samples, shard_samples):
        stop = min(start + shard_samples, n_samples)
        writer.append(x[start * T : stop * T], np.arange(start, stop, dtype=np.int64))
    writer.finish()
    return dpath


def synthetic_store(dpath: str | Path, *, n: int = 8192, d_in: int = 32, n_atoms: int = 64, n_active: int = 4,
                    noise: float = 0.01, seed: int = 0, **kwargs) -> tuple[Path, torch.Tensor]:
    """A store of sparse mixtures; returns (store path, atoms)."""
    atoms = make_atoms(n_atoms, d_in, seed)
    x, _ = sparse_mix(atoms, n, n_active, noise, seed + 1)
    return write_store(dpath, x, **kwargs), atoms


def read_metrics(run_dpath: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in (Path(run_dpath) / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def max_cosine(true_atoms: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """For each true atom, the best cosine similarity among learned directions [n_atoms]."""
    a = true_atoms / true_atoms.norm(dim=-1, keepdim=True)
    b = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).max(dim=1).values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child Pythons: quiet, single-process, repo importable, few threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["SAESCOPE_PROGRESS"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -c code` in the repo root and return the finished process."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env or subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"child python failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

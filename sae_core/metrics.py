"""Reconstruction and sparsity metrics, accumulated over chunks so they work on any store size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DENSITY_BINS = np.arange(-8.0, 0.5, 0.5)
"""log10 firing-frequency bin edges of the density histogram; never-firing latents go in bin 0."""


@dataclass
class MetricsAccumulator:
    """Running sums for MSE, FVU (sum of squared errors / total variance), L0 and firing counts."""

    d_sae: int
    n_tokens: int = 0
    sq_err: float = 0.0
    sum_x: Tensor | None = None
    sum_x2: float = 0.0
    l0_sum: float = 0.0
    fire_counts: Tensor | None = None

    def update(self, x: Tensor, x_hat: Tensor, z: Tensor) -> None:
        """x, x_hat [n, d_in] in the same units; z dense latents [n, d_sae]."""
        self.update_counts(x, x_hat, torch.count_nonzero(z, dim=0))  # latents are never negative

    def update_counts(self, x: Tensor, x_hat: Tensor, fire_counts: Tensor) -> None:
        """Like `update`, with the latents given as how many of the n rows each fired on [d_sae]."""
        x, x_hat = x.double(), x_hat.double()
        self.n_tokens += x.shape[0]
        self.sq_err += float((x - x_hat).pow(2).sum())
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_x2 += float(x.pow(2).sum())
        counts = fire_counts.to(torch.long).cpu()
        self.l0_sum += float(counts.sum())
        self.fire_counts = counts if self.fire_counts is None else self.fire_counts + counts

    def add(self, other: MetricsAccumulator) -> MetricsAccumulator:
        """Fold another accumulator (e.g. one chunk's) into this one, adding exactly as `update`
        would have: torchrun ranks combine their chunks into the single-process result."""
        self.n_tokens += other.n_tokens
        self.sq_err += other.sq_err
        self.sum_x = other.sum_x if self.sum_x is None else self.sum_x + other.sum_x
        self.sum_x2 += other.sum_x2
        self.l0_sum += other.l0_sum
        self.fire_counts = other.fire_counts if self.fire_counts is None else self.fire_counts + other.fire_counts
        return self

    def result(self) -> dict:
        n = max(self.n_tokens, 1)
        d_in = self.sum_x.numel() if self.sum_x is not None else 1
        total_var = self.sum_x2 - float(self.sum_x.pow(2).sum()) / n if self.sum_x is not None else 0.0
        fvu = self.sq_err / total_var if total_var > 0 else float("nan")
        density = (self.fire_counts.double() / n).numpy() if self.fire_counts is not None else np.zeros(self.d_sae)
        return {
            "n_tokens": self.n_tokens,
            "mse": self.sq_err / (n * d_in),
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "l0": self.l0_sum / n,
            "dead_fraction": float((density == 0).mean()),
            "density_hist": density_histogram(density),
        }


def density_histogram(density: np.ndarray) -> dict:
    """Histogram of log10 firing frequencies; latents that never fired are counted apart."""
    alive = density[density > 0]
    counts, edges = np.histogram(np.log10(alive), bins=DENSITY_BINS) if alive.size else (np.zeros(len(DENSITY_BINS) - 1, int), DENSITY_BINS)
    return {"log10_edges": edges.tolist(), "counts": counts.tolist(), "n_dead": int((density == 0).sum())}


def batch_fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained of one batch (for progress display)."""
    x, x_hat = x.float(), x_hat.float()
    total = (x - x.mean(0)).pow(2).sum()
    return float((x - x_hat).pow(2).sum() / total.clamp_min(1e-12))

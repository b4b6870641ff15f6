"""Neuron alignment and the ultra-low-density cluster (analyses from the CLIP SAE explorer seed).

Neuron alignment: is a feature just one MLP neuron? The hooked layer's output is a sum of its
neurons' output vectors (CLIP: the columns of the layer's `fc2`; EfficientNet: the block's
projection-conv columns times its batch-norm scale). For each feature, the cosine of its encoder
direction with every neuron's vector; its maximum, the best neuron and how many neurons exceed a
random baseline: the 99th percentile of the same cosines for RANDOM_VECTORS random directions.

Ultra-low-density cluster: features far below the others in log10 density, split off at the
widest gap (at least MIN_GAP_DECADES) in the lower half of the sorted log densities; reported
with its size and the mean pairwise cosine of its members' encoder directions (near 1 when they
are one direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

RANDOM_VECTORS = 1024
"""Random directions of the baseline."""
BASELINE_QUANTILE = 0.99
"""A neuron counts as aligned with a feature above this quantile of random directions' cosines."""
MIN_GAP_DECADES = 1.0
"""An ultra-low-density cluster sits at least this many decades of density below the rest."""


def neuron_vectors(layer: nn.Module) -> torch.Tensor | None:
    """[n_neurons, d_out] output vectors of a layer's neurons, or None for layers without an MLP out.

    Transformer layers (`mlp.fc2`, HF CLIP/SigLIP/ViT naming): fc2's columns. EfficientNet blocks
    (`_project_conv`, `_bn2`): the projection's columns scaled as the batch norm scales each channel.
    """
    fc2 = getattr(getattr(layer, "mlp", None), "fc2", None)
    if isinstance(fc2, nn.Linear):
        return fc2.weight.detach().float().T.contiguous()
    proj, bn = getattr(layer, "_project_conv", None), getattr(layer, "_bn2", None)
    if isinstance(proj, nn.Conv2d) and proj.kernel_size == (1, 1) and isinstance(bn, nn.BatchNorm2d):
        scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
        return (proj.weight.detach().float()[:, :, 0, 0] * scale[:, None]).T.contiguous()
    return None


@dataclass
class Alignment:
    max_cos: np.ndarray
    """[d_sae] largest cosine of the feature's encoder direction with a neuron's vector."""
    best_neuron: np.ndarray
    """[d_sae] that neuron."""
    n_above: np.ndarray
    """[d_sae] neurons whose cosine exceeds `threshold`."""
    threshold: float
    random_max_cos: np.ndarray
    """[RANDOM_VECTORS] the same maximum for random directions (the dashboard's baseline)."""
    cosines: np.ndarray
    """[d_sae, n_neurons] int8: cosine x 127 (the feature page's line plot)."""


@torch.no_grad()
def align(w_enc: torch.Tensor, neurons: torch.Tensor, seed: int = 0, chunk: int = 4096) -> Alignment:
    """w_enc [d_in, d_sae] (encoder directions as columns), neurons [n_neurons, d_in]."""
    enc = torch.nn.functional.normalize(w_enc.detach().float().cpu().T, dim=1)
    nv = torch.nn.functional.normalize(neurons.float().cpu(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    rand = torch.nn.functional.normalize(torch.randn(RANDOM_VECTORS, nv.shape[1], generator=gen), dim=1)
    rcos = rand @ nv.T
    threshold = float(torch.quantile(rcos.flatten()[: 1 << 24], BASELINE_QUANTILE))
    parts = [enc[i : i + chunk] @ nv.T for i in range(0, enc.shape[0], chunk)]
    cos = torch.cat(parts) if parts else torch.zeros((0, nv.shape[0]))
    best = cos.max(dim=1) if cos.numel() else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    return Alignment(best[0].numpy(), best[1].numpy().astype(np.int32), (cos > threshold).sum(1).numpy().astype(np.int32),
                     threshold, rcos.max(dim=1).values.numpy(), (cos * 127).round().clamp(-127, 127).to(torch.int8).numpy())


@dataclass
class LowDensityCluster:
    feature_ids: np.ndarray
    gap_decades: float
    mean_pairwise_cos: float | None
    """Mean cosine of the members' encoder directions over distinct pairs (None below 2 members)."""


def ultra_low_density_cluster(density: np.ndarray, w_enc: torch.Tensor) -> LowDensityCluster | None:
    """The firing features far below the rest in log10 density, or None when no gap is wide enough."""
    live = np.nonzero(density > 0)[0]
    if len(live) < 4:
        return None
    logd = np.log10(density[live])
    order = np.argsort(logd, kind="stable")
    gaps = np.diff(logd[order])[: len(live) // 2]  # only splits leaving the cluster in the lower half
    if not len(gaps) or gaps.max() < MIN_GAP_DECADES:
        return None
    cut = int(np.argmax(gaps))
    members = np.sort(live[order[: cut + 1]])
    enc = torch.nn.functional.normalize(w_enc.detach().float().cpu().T[torch.as_tensor(members)], dim=1)
    n = len(members)
    mean_cos = float(((enc @ enc.T).sum() - n) / (n * (n - 1))) if n > 1 else None
    return LowDensityCluster(members, float(gaps[cut]), mean_cos)


MAX_STORED_COSINES = 1 << 26
"""Per-neuron cosines are stored for the line plot while d_sae x n_neurons stays below this (64 MB)."""


def hooked_layer(model: str, layer: str) -> nn.Module | None:
    """The module whose output a store holds, for models whose layers have neurons to align with
    (EfficientNet-Lite0 blocks); None otherwise."""
    if model != "efficientnet-lite0" or not layer.startswith("blocks."):
        return None
    from precompute.extractors.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()[0]._blocks[int(layer.split(".")[1])]

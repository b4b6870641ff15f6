"""Encode a scan chunk into the sparse form every index statistic reads.

A scan needs, per chunk, each sample's positive scores (its maximum over tokens) per feature.
Held densely that is a [samples, d_sae] array that every statistic would sweep again; held as
coordinates (row, feature, value) it is k entries per token for TopK SAEs, so the statistics
cost follows the number of firing entries, not samples x d_sae.

TopK SAEs can also take their candidates from a bfloat16 encoder matmul (`precision="bfloat16"`,
the default on CUDA, where fp32 matmuls run at a fraction of the tensor cores' rate): the best
k + margin latents of each token are re-scored in float32 and the k best of those kept. Values
have float32 precision (not float32 bits: the re-scoring adds in another order, ~1e-7 relative);
the selection can differ from the float32 one only where bfloat16 rounding of the product moves
a latent across `margin` others at the k-th place.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sae_core.model import SparseAutoencoder


class SampleCode(NamedTuple):
    """A chunk's positive sample scores as coordinates, ordered by row."""

    rows: Tensor
    """[E] int64 sample position within the chunk."""
    feats: Tensor
    """[E] int64 feature id."""
    values: Tensor
    """[E] float32 score (> 0)."""


class EncodedChunk(NamedTuple):
    code: SampleCode
    x_hat: Tensor | None
    """[rows, d_in] reconstruction in input units (None unless asked for)."""
    fire_counts: Tensor | None
    """[d_sae] int64 tokens on which each latent fired (None unless asked for)."""


class ChunkEncoder:
    """Encodes chunks of a store through one SAE; holds the per-scan copies of its weights."""

    RESCORE_BUDGET = 1 << 25
    """Elements of the gathered [rows, candidates, d_in] encoder columns re-scored at once."""

    def __init__(self, sae: SparseAutoencoder, tokens_per_sample: int, precision: str = "float32", margin: int | None = None):
        self.sae, self.T = sae, tokens_per_sample
        self.d_sae = sae.cfg.d_sae
        self.fast = precision == "bfloat16" and sae.cfg.arch == "topk"
        if self.fast:
            k = sae.cfg.k
            self.n_cand = min(self.d_sae, k + (margin if margin is not None else max(8, k // 2)))
            self.W_enc_low = sae.W_enc.detach().to(torch.bfloat16)
            self.W_enc_rows = sae.W_enc.detach().t().contiguous()  # [d_sae, d_in]: one latent's column is one row

    @torch.no_grad()
    def encode(self, acts: Tensor, reconstruct: bool = False) -> EncodedChunk:
        sae = self.sae
        if sae.cfg.arch != "topk":
            z = sae.encode(acts)
            x_hat = sae.decode(z) if reconstruct else None
            fire = torch.count_nonzero(z, dim=0) if reconstruct else None
            scores = z if self.T == 1 else z.view(-1, self.T, self.d_sae).amax(dim=1)
            rows, feats = torch.nonzero(scores > 0, as_tuple=True)
            return EncodedChunk(SampleCode(rows, feats, scores[rows, feats].float()), x_hat, fire)
        values, indices = self._topk(acts)
        x_hat = sae.decode_sparse(values, indices) if reconstruct else None
        pos = values > 0
        fire = torch.bincount(indices[pos], minlength=self.d_sae) if reconstruct else None
        return EncodedChunk(self._sample_code(values, indices, pos), x_hat, fire)

    def _topk(self, acts: Tensor) -> tuple[Tensor, Tensor]:
        sae = self.sae
        if not self.fast:
            return sae.encode_sparse(acts)
        x_c = sae.centred(acts.float())
        # The product is rounded to bfloat16 but the bias is added in float32: a large shared bias
        # would otherwise round hundreds of latents near the k-th place to one value.
        pre = torch.mm(x_c.to(torch.bfloat16), self.W_enc_low).float().add_(sae.b_enc)
        cand = pre.topk(self.n_cand, dim=-1, sorted=False).indices
        del pre
        exact = torch.empty(cand.shape, dtype=torch.float32, device=acts.device)
        step = max(1, self.RESCORE_BUDGET // (self.n_cand * x_c.shape[1]))
        for i in range(0, cand.shape[0], step):
            cols = self.W_enc_rows[cand[i : i + step]]  # [rows, candidates, d_in]
            exact[i : i + step] = torch.bmm(cols, x_c[i : i + step, :, None])[..., 0]
        exact += sae.b_enc[cand]
        values, pick = exact.topk(sae.cfg.k, dim=-1, sorted=False)
        return values.relu(), cand.gather(1, pick)

    def _sample_code(self, values: Tensor, indices: Tensor, pos: Tensor) -> SampleCode:
        """Per (sample, feature) the maximum over the sample's tokens of the positive values."""
        rows = torch.arange(values.shape[0], device=values.device)[:, None].expand_as(indices)
        if self.T == 1:  # TopK indices are distinct within a row: nothing to combine
            return SampleCode(rows[pos], indices[pos], values[pos].float())
        key = (rows[pos] // self.T) * self.d_sae + indices[pos]
        uniq, inverse = torch.unique(key, return_inverse=True)  # sorted: rows stay in order
        best = torch.zeros(uniq.shape, dtype=torch.float32, device=values.device)
        best.scatter_reduce_(0, inverse, values[pos].float(), "amax", include_self=False)
        return SampleCode(uniq // self.d_sae, uniq % self.d_sae, best)

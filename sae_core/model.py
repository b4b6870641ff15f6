"""The sparse autoencoder: one module for TopK, BatchTopK, ReLU/L1, JumpReLU and Gated SAEs.

Inputs are scaled by `input_scale` (so their mean squared norm is d_in) inside `encode` and the
scale is undone by `decode`, so callers always work in the model's own activation units.
TopK-family SAEs stay sparse from encoder to decoder: `decode_sparse` never builds a dense
[batch, d_sae] matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae_core.config import SAEConfig
from sae_core.errors import DataError
from sae_core.jumprelu import jumprelu, step
from sae_core.kernels import LatentOrder, decode_topk, sparse_decode, topk_encode


class SparseCode(NamedTuple):
    """The k active latents of each row: values [batch, k] and their indices [batch, k]."""

    values: Tensor
    indices: Tensor


class ForwardOutput(NamedTuple):
    """Everything a training step needs; fields never change with the architecture."""

    x_hat: Tensor
    """Reconstruction [batch, d_in] in input units."""
    loss: Tensor
    """Total loss (scalar) = recon + sparsity + aux."""
    recon: Tensor
    """Mean squared error per element, on normalised inputs."""
    sparsity: Tensor
    """L1 / L0 penalty (0 for the TopK family)."""
    aux: Tensor
    """AuxK loss (TopK family) or gate reconstruction loss (Gated); else 0."""
    l0: Tensor
    """Active latents per row [batch] (float)."""
    fired: Tensor
    """Which latents fired at least once in the batch [d_sae] (bool)."""


class SparseAutoencoder(nn.Module):
    """x -> z = sigma(W_enc^T (x - b_dec) + b_enc) -> x_hat = W_dec^T z + b_dec."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if not cfg.d_in or not cfg.d_sae:
            raise ValueError("SAEConfig needs d_in and d_sae; call cfg.resolved(d_in) first")
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))
        if cfg.arch == "batchtopk":
            self.register_buffer("threshold", torch.zeros(()))
            self.register_buffer("threshold_n", torch.zeros((), dtype=torch.long))
        if cfg.arch == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((d_sae,), float(cfg.jumprelu_init_threshold)).log())
        if cfg.arch == "gated":
            self.r_mag = nn.Parameter(torch.zeros(d_sae))
            self.b_mag = nn.Parameter(torch.zeros(d_sae))
        self.reset_parameters()

    # ---- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit-norm decoder rows; encoder tied to the decoder's transpose."""
        if self.cfg.init == "orthonormal":
            nn.init.orthogonal_(self.W_dec)
        else:
            nn.init.normal_(self.W_dec)
        self.normalize_decoder()
        self.W_enc.copy_(self.W_dec.T)

    @torch.no_grad()
    def init_from_data(self, sample: Tensor, b_dec: Literal["geometric_median", "mean", "zero"] = "geometric_median") -> None:
        """Set the input scale and b_dec from a sample of activations [n, d_in]."""
        sample = sample.float()
        check_finite(sample, "initialisation sample")
        mean_sq_norm = sample.pow(2).sum(-1).mean().clamp_min(1e-12)
        self.input_scale.fill_((self.cfg.d_in / mean_sq_norm).sqrt().item())
        scaled = sample * self.input_scale
        if b_dec == "geometric_median":
            self.b_dec.copy_(geometric_median(scaled))
        elif b_dec == "mean":
            self.b_dec.copy_(scaled.mean(0))
        else:
            self.b_dec.zero_()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each decoder row so steps keep rows on the sphere."""
        if self.W_dec.grad is None:
            return
        # vecdot and addcmul_: one pass each over W_dec, no [d_sae, d_in] temporaries
        parallel = torch.linalg.vecdot(self.W_dec.grad, self.W_dec).unsqueeze(-1)
        self.W_dec.grad.addcmul_(parallel, self.W_dec, value=-1)

    # ---- encoder ---------------------------------------------------------------------------
    def centred(self, x: Tensor) -> Tensor:
        """Raw inputs in the encoder's frame: scaled to the normalised units, minus b_dec."""
        return x * self.input_scale - self.b_dec

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations [batch, d_sae] of raw inputs."""
        return self.centred(x) @ self.W_enc + self.b_enc

    def encode_sparse(self, x: Tensor) -> SparseCode:
        """The k largest (ReLU'd) latents per row; TopK only."""
        if self.cfg.arch != "topk":  # BatchTopK's inference code has a varying number of latents: use encode()
            raise TypeError(f"encode_sparse is for topk SAEs, not {self.cfg.arch}; use encode()")
        values, indices = self.pre_acts(x).topk(self.cfg.k, dim=-1, sorted=False)
        return SparseCode(values.relu(), indices)

    def encode(self, x: Tensor) -> Tensor:
        """Dense latent activations [batch, d_sae] (inference behaviour for every arch)."""
        pre = self.pre_acts(x)
        arch = self.cfg.arch
        if arch == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, indices, values.relu())
        if arch == "batchtopk":
            return pre * (pre > self.threshold.clamp_min(0)).to(pre.dtype)
        if arch == "relu":
            return pre.relu()
        if arch == "jumprelu":
            return jumprelu(pre, self.log_threshold.exp(), self.cfg.jumprelu_bandwidth)
        if arch == "gated":
            return self._gated_latents(x)[0]
        raise AssertionError(f"unhandled arch {arch}")

    def _gated_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(latents, gate pre-activations): the gate decides which fire, the magnitude path how much."""
        centred = self.centred(x)
        pi_gate = centred @ self.W_enc + self.b_enc
        pi_mag = centred @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu(), pi_gate

    def encode_decode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(dense latents [batch, d_sae], reconstruction in input units); TopK decodes sparsely."""
        if self.cfg.arch == "topk":
            code = self.encode_sparse(x)
            z = torch.zeros(x.shape[0], self.cfg.d_sae, dtype=code.values.dtype, device=x.device)
            return z.scatter_(-1, code.indices, code.values), self.decode_sparse(*code)
        z = self.encode(x)
        return z, self.decode(z)

    # ---- decoder ---------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        """Dense latents [batch, d_sae] -> reconstruction in input units."""
        return (z @ self.W_dec + self.b_dec) / self.input_scale

    def decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        """Sparse latents -> reconstruction in input units, gathering only k decoder rows per row."""
        return (self._decode_sparse_scaled(values, indices) + self.b_dec) / self.input_scale

    def _decode_sparse_scaled(self, values: Tensor, indices: Tensor, order: LatentOrder | None = None) -> Tensor:
        # Sums W_dec rows weighted by values (an embedding_bag); fp32 because its bf16 CUDA backward is missing.
        return sparse_decode(values.float(), indices, self.W_dec.float(), order)

    # ---- forward (training objective) ------------------------------------------------------
    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> ForwardOutput:
        """Reconstruct x and compute the architecture's loss terms.

        `dead_mask` [d_sae] marks latents that have not fired for a long time; TopK-family SAEs
        train them with the AuxK loss on the detached residual.
        """
        arch = self.cfg.arch
        target = x.float() * self.input_scale
        zero = target.new_zeros(())
        if arch == "topk":
            return self._forward_topk(x, target, dead_mask)
        if arch == "batchtopk" and self.training:
            pre = self.pre_acts(x).relu()  # one encoder matmul serves the batch top-k and AuxK
            code = self._batch_topk_code(pre)
            x_hat_n = self._decode_sparse_scaled(code.values, code.indices) + self.b_dec
            recon = _mse(x_hat_n, target)
            aux = self._auxk_loss(pre, target - x_hat_n.detach(), dead_mask) if dead_mask is not None else zero
            return self._sparse_output(x_hat_n, recon, aux, code)

        if arch == "gated":
            z, pi_gate = self._gated_latents(x)
            gate = pi_gate.relu()
            sparsity = self.cfg.l1_coeff * (gate * self.W_dec.norm(dim=-1)).sum(-1).mean() / self.cfg.d_in
            x_hat_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
            aux = _mse(x_hat_gate, target)
        elif arch == "batchtopk":  # inference: the learned threshold replaces the batch top-k
            z, sparsity, aux = self.encode(x), zero, zero
        else:
            pre = self.pre_acts(x)
            if arch == "relu":
                z = pre.relu()
                sparsity = self.cfg.l1_coeff * (z * self.W_dec.norm(dim=-1)).sum(-1).mean() / self.cfg.d_in
            else:  # jumprelu
                threshold = self.log_threshold.exp()
                z = jumprelu(pre, threshold, self.cfg.jumprelu_bandwidth)
                sparsity = self.cfg.l0_coeff * step(pre, threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
            aux = zero
        x_hat_n = z @ self.W_dec + self.b_dec
        recon = _mse(x_hat_n, target)
        active = z > 0
        return ForwardOutput(
            x_hat_n / self.input_scale, recon + sparsity + aux, recon, sparsity, aux,
            active.sum(-1).float(), active.any(0),
        )

    def _forward_topk(self, x: Tensor, target: Tensor, dead_mask: Tensor | None) -> ForwardOutput:
        """One encoder matmul serves the top-k and the AuxK selection (see sae_core.kernels)."""
        n_dead = int(dead_mask.sum()) if dead_mask is not None and self.cfg.aux_coeff > 0 else 0
        k_aux = min(self.cfg.n_aux, n_dead)
        sel = topk_encode(target, self.b_dec, self.W_enc, self.b_enc, self.cfg.k, dead_mask if k_aux else None, k_aux)
        # fp32 decoder (embedding_bag's bf16 CUDA backward is missing); AuxK's part has no b_dec
        x_hat_s, aux_hat = decode_topk(sel._replace(values=sel.values.float(), aux_values=sel.aux_values.float()), self.W_dec.float())
        x_hat_n = x_hat_s + self.b_dec
        recon = _mse(x_hat_n, target)
        aux = target.new_zeros(())
        if aux_hat is not None:
            residual = (target - x_hat_n).detach()
            aux = self._normalized_aux(aux_hat, residual)
        return self._sparse_output(x_hat_n, recon, aux, SparseCode(sel.values, sel.indices))

    def _sparse_output(self, x_hat_n: Tensor, recon: Tensor, aux: Tensor, code: SparseCode) -> ForwardOutput:
        active = code.values > 0
        fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=x_hat_n.device)
        fired[code.indices[active]] = True
        zero = recon.new_zeros(())
        return ForwardOutput(x_hat_n / self.input_scale, recon + aux, recon, zero, aux, active.sum(-1).float(), fired)

    def _batch_topk_code(self, pre: Tensor) -> SparseCode:
        """BatchTopK: the batch's k*batch largest (ReLU'd) pre-activations, kept sparse per row;
        updates the inference threshold."""
        batch, d_sae = pre.shape
        flat_vals, flat_idx = pre.flatten().topk(self.cfg.k * batch, sorted=False)
        # Keep the per-row layout sparse: each row gets at most `k_row` slots, padded with zeros.
        rows = flat_idx // d_sae
        counts = torch.bincount(rows, minlength=batch)
        k_row = int(counts.max())
        order = torch.argsort(rows, stable=True)
        rows, flat_vals, flat_idx = rows[order], flat_vals[order], flat_idx[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rows.numel(), device=pre.device) - starts[rows]
        values = pre.new_zeros(batch, k_row)
        indices = torch.zeros(batch, k_row, dtype=torch.long, device=pre.device)
        values[rows, slot] = flat_vals
        indices[rows, slot] = flat_idx % d_sae
        self._update_threshold(flat_vals)
        return SparseCode(values, indices)

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        """Running mean of the smallest positive kept activation: the inference threshold."""
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        n = self.threshold_n.item()
        self.threshold.mul_(n / (n + 1)).add_(positive.min().float() / (n + 1))
        self.threshold_n.add_(1)

    def _auxk_loss(self, pre: Tensor, residual: Tensor, dead_mask: Tensor) -> Tensor:
        """Reconstruct the (detached) residual from the top dead latents of `pre`, without b_dec."""
        n_dead = int(dead_mask.sum())
        if n_dead == 0 or self.cfg.aux_coeff == 0:
            return residual.new_zeros(())
        pre = pre.masked_fill(~dead_mask, 0.0)
        values, indices = pre.topk(min(self.cfg.n_aux, n_dead), dim=-1, sorted=False)
        return self._normalized_aux(self._decode_sparse_scaled(values, indices), residual)

    def _normalized_aux(self, residual_hat: Tensor, residual: Tensor) -> Tensor:
        """AuxK loss: squared error of the residual's reconstruction over the residual's variance."""
        baseline = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        # mse_loss: one fused op forward and backward, where pow/sum/mean autograd takes five
        loss = F.mse_loss(residual_hat.float(), residual) * residual.shape[-1] / baseline
        return self.cfg.aux_coeff * torch.nan_to_num(loss, nan=0.0)

    # ---- steering --------------------------------------------------------------------------
    @torch.no_grad()
    def surgery(
        self,
        x: Tensor,
        k: int | Sequence[int],
        strength: float | Sequence[float] = 0.0,
        mode: Literal["set", "add", "scale"] = "set",
    ) -> Tensor:
        """Edit features `k` of x's code and return x + decode(z') - decode(z).

        Keeping the SAE error term means only the chosen features change: `mode="set"` with
        strength 0 (or negative) clamps them, `"add"` boosts, `"scale"` multiplies.
        """
        features = [k] if isinstance(k, int) else list(k)
        strengths = [strength] * len(features) if isinstance(strength, (int, float)) else list(strength)
        if len(strengths) != len(features):
            raise ValueError(f"{len(features)} features but {len(strengths)} strengths")
        for f in features:
            if not 0 <= f < self.cfg.d_sae:
                raise ValueError(f"feature {f} is out of range 0..{self.cfg.d_sae - 1}")
        z = self.encode(x)
        edited = z.clone()
        idx = torch.tensor(features, device=z.device)
        s = torch.tensor(strengths, dtype=z.dtype, device=z.device)
        if mode == "set":
            edited[..., idx] = s.expand_as(edited[..., idx])
        elif mode == "add":
            edited[..., idx] += s
        elif mode == "scale":
            edited[..., idx] *= s
        else:
            raise ValueError(f"mode={mode!r}; choose set, add or scale")
        return x + self.decode(edited) - self.decode(z)


def _mse(x_hat: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(x_hat.float(), target)


def check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).any(-1).sum()) if x.ndim > 1 else int((~torch.isfinite(x)).sum())
        raise DataError(f"{what} contains NaN or inf values ({n_bad} rows); clean the activations first")


@torch.no_grad()
def geometric_median(points: Tensor, n_iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: robust centre of the data, the recommended b_dec start."""
    median = points.mean(0)
    for _ in range(n_iters):
        dist = (points - median).norm(dim=-1).clamp_min(eps)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        if (new - median).norm() < eps * max(1.0, median.norm().item()):
            return new
        median = new
    return median

"""The TopK encoder step with a sparse backward pass, and its plain autograd reference.

A TopK SAE keeps k of d_sae latents per row, yet plain autograd back-propagates a dense
[batch, d_sae] gradient through two more full-size matmuls. `SparseTopKEncode` computes the
pre-activations once, selects the k latents (and, for AuxK, the top dead latents from the same
pre-activations), and in backward touches only the selected latents: the weight gradient is a
sparse-times-dense product sorted by latent, and b_dec's gradient one matvec (the input gradient
itself, a gather of k encoder columns per row, is only formed when the input needs it).
AuxK gradients reach the dead latents' encoder columns (some implementations drop them).

The kernel is chosen once at import; `SAESCOPE_SPARSE_ENCODER=0` selects the plain reference.
`tests/test_sae_kernels.py` checks that both give the same outputs and gradients.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class TopKSelection(NamedTuple):
    values: Tensor
    """[batch, k] ReLU'd pre-activations of the k largest latents."""
    indices: Tensor
    """[batch, k]"""
    aux_values: Tensor
    """[batch, k_aux] the largest dead latents' ReLU'd pre-activations (k_aux may be 0)."""
    aux_indices: Tensor


def _select(pre: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    values, indices = pre.topk(k, dim=-1, sorted=False)
    if dead_mask is not None and k_aux > 0:
        # Only the dead latents' columns: usually a few percent of d_sae, where masking the whole
        # [batch, d_sae] matrix would make and scan a second dense copy.
        dead = dead_mask.nonzero().squeeze(1)
        aux_values, local = pre.index_select(1, dead).topk(k_aux, dim=-1, sorted=False)
        aux_indices = dead[local]
    else:
        aux_values = pre.new_zeros(pre.shape[0], 0)
        aux_indices = torch.zeros(pre.shape[0], 0, dtype=torch.long, device=pre.device)
    return values.relu(), indices, aux_values.relu(), aux_indices


class SparseTopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead_mask: Tensor | None, k_aux: int):
        x_c = x - b_dec
        # The bias is added in float32 after the (autocast) matmul, exactly as the plain reference
        # `x_c @ W_enc + b_enc` does: in a bfloat16 epilogue a large bias would swamp the product.
        pre = torch.mm(x_c, W_enc.to(x_c.dtype)).float().add_(b_enc)
        values, indices, aux_values, aux_indices = _select(pre, k, dead_mask, k_aux)
        ctx.save_for_backward(x_c, W_enc, torch.cat([indices, aux_indices], 1), torch.cat([values > 0, aux_values > 0], 1))
        ctx.k = k
        ctx.mark_non_differentiable(indices, aux_indices)
        return values, indices, aux_values, aux_indices

    @staticmethod
    def backward(ctx, g_values, _g_idx, g_aux, _g_aux_idx):
        x_c, W_enc, indices, active = ctx.saved_tensors
        batch, n_sel = indices.shape
        d_sae = W_enc.shape[1]
        parts = [g_values if g_values is not None else x_c.new_zeros(batch, ctx.k)]
        if n_sel > ctx.k:
            parts.append(g_aux if g_aux is not None else x_c.new_zeros(batch, n_sel - ctx.k))
        g = (torch.cat(parts, 1).float() * active).contiguous()
        grad_x = grad_b_dec = grad_w = grad_b = None
        flat_idx, flat_g = indices.reshape(-1), g.reshape(-1)
        if ctx.needs_input_grad[0]:  # rarely: inputs are data
            grad_x = F.embedding_bag(indices, W_enc.t().float().contiguous(), per_sample_weights=g, mode="sum").to(x_c.dtype)
        if ctx.needs_input_grad[2]:
            rows = torch.arange(batch, device=x_c.device).repeat_interleave(n_sel)
            g_sparse = torch.sparse_coo_tensor(torch.stack([flat_idx, rows]), flat_g, (d_sae, batch), check_invariants=False)
            grad_w = torch.sparse.mm(g_sparse, x_c.float()).t().to(W_enc.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            grad_pre_sum = torch.zeros(d_sae, dtype=torch.float32, device=x_c.device).index_add_(0, flat_idx, flat_g)
            grad_b = grad_pre_sum if ctx.needs_input_grad[3] else None
            # b_dec's gradient is minus the row sum of the input gradient, which is W_enc @ (the
            # pre-activation gradient summed over rows): a [d_in, d_sae] matvec instead of
            # gathering k + k_aux encoder columns for every row.
            if ctx.needs_input_grad[1]:
                grad_b_dec = -(W_enc.float() @ grad_pre_sum)
        return grad_x, grad_b_dec, grad_w, grad_b, None, None, None


def topk_encode_plain(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> TopKSelection:
    """Reference: the same selection through plain autograd (dense backward)."""
    return TopKSelection(*_select((x - b_dec) @ W_enc + b_enc, k, dead_mask, k_aux))


def topk_encode_sparse(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> TopKSelection:
    """`x` in normalised units, centred on `b_dec` inside."""
    return TopKSelection(*SparseTopKEncode.apply(x, b_dec, W_enc, b_enc, k, dead_mask, k_aux))


topk_encode = topk_encode_plain if os.environ.get("SAESCOPE_SPARSE_ENCODER") == "0" else topk_encode_sparse

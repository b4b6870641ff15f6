"""The TopK encoder step with a sparse backward pass, and its plain autograd reference.

A TopK SAE keeps k of d_sae latents per row, yet plain autograd back-propagates a dense
[batch, d_sae] gradient through two more full-size matmuls. `SparseTopKEncode` computes the
pre-activations once, selects the k latents (and, for AuxK, the top dead latents from the same
pre-activations), and in backward touches only the selected latents: the weight gradient is a
sparse-times-dense product sorted by latent, and b_dec's gradient one matvec (the input gradient
itself, a gather of k encoder columns per row, is only formed when the input needs it).
AuxK gradients reach the dead latents' encoder columns (some implementations drop them).

AuxK selects k_aux = d_in / 2 dead latents per row, far more than k. When that is a large share
of the dead latents (always so when few latents are dead), the AuxK code is kept dense over the
dead columns (`TopKSelection.aux_dense`): its decode and all its gradients are then matmuls over
the [batch, n_dead] block instead of gathers and scatters of k_aux rows per row, and when every
dead latent is selected no second top-k runs at all.

The kernel is chosen once at import; `SAESCOPE_SPARSE_ENCODER=0` selects the plain reference.
`tests/test_sae_kernels.py` checks that both give the same outputs and gradients.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sae_core.dense_code import compute_dtype, dense_decode, dense_encoder_grads, use_dense_code

DENSE_AUX_MIN_SHARE = 0.25
"""k_aux / n_dead from which the AuxK code is dense over the dead columns. A matmul entry costs
far less than a gathered one, but the dense block has n_dead / k_aux times more entries; on the
2-core CPU of docs/benchmarks.md the dense block won at 1/3 of the dead selected (demo patches,
by 4-13%) and lost at 1/8 (d=768, 6,144 latents: 2,147 against 2,848 tokens/s)."""


class TopKSelection(NamedTuple):
    values: Tensor
    """[batch, k] ReLU'd pre-activations of the k largest latents."""
    indices: Tensor
    """[batch, k]"""
    aux_values: Tensor
    """The AuxK code, ReLU'd: [batch, k_aux] values of the largest dead latents (k_aux may be 0),
    or, when `aux_dense`, [batch, n_dead] over all dead latents with zeros off the k_aux largest."""
    aux_indices: Tensor
    """[batch, k_aux] latent of each aux value, or when `aux_dense` [batch, n_dead], every row
    the dead latents in order (an expanded view of one vector)."""
    aux_dense: bool = False
    order: LatentOrder | None = None
    """The main code's entries grouped by latent, when the kernel computed it (shared by the
    encoder's and the decoder's weight gradients); None from the plain reference."""


class LatentOrder(NamedTuple):
    """The entries of an index matrix [batch, n] grouped by latent: what `sum_by_latent` sorts.
    The encoder's and the decoder's weight gradients group the same main-code entries, so
    `SparseTopKEncode` sorts them once per step and both backward passes reuse it."""

    latents: Tensor
    """[m] the distinct latents, ascending (int64)."""
    offsets: Tensor
    """[m] where each latent's entries start in `order`."""
    order: Tensor
    """[batch * n] flat positions of the entries, sorted by latent (stable)."""
    rows: Tensor
    """[batch * n] the row of each sorted entry."""


def latent_order(indices: Tensor) -> LatentOrder:
    n = indices.shape[1]
    index_dtype = torch.int32 if indices.numel() < 2**31 else torch.int64
    sorted_latents, order = indices.reshape(-1).to(index_dtype).sort(stable=True)
    latents, counts = torch.unique_consecutive(sorted_latents, return_counts=True)
    offsets = (counts.cumsum(0) - counts).to(index_dtype)
    rows = torch.div(order, n, rounding_mode="floor").to(index_dtype)  # entries are row-major
    return LatentOrder(latents.long(), offsets, order, rows)


def dense_aux(k_aux: int, n_dead: int) -> bool:
    """Whether AuxK's code is cheaper dense over the dead columns than as k_aux gathers per row."""
    return k_aux > 0 and k_aux >= DENSE_AUX_MIN_SHARE * n_dead


def _select_aux(pre: Tensor, dead: Tensor, k_aux: int, dense: bool) -> tuple[Tensor, Tensor]:
    """The largest k_aux of the dead latents' pre-activations, ReLU'd, in sparse or dense form.

    The ReLU comes first: entries it zeroes carry no value and no gradient in the code whichever of
    them a top-k picks, so ranking the ReLU'd values gives the same code, and lets the CPU rank their
    IEEE bits as int32 (`_top_positions`)."""
    # Only the dead latents' columns: usually a few percent of d_sae, where masking the whole
    # [batch, d_sae] matrix would make and scan a second dense copy.
    pre_dead = pre.index_select(1, dead).relu_()
    if not dense:
        local = _top_positions(pre_dead, k_aux)
        return pre_dead.gather(1, local), dead[local]
    columns = dead.expand(pre.shape[0], -1)
    if k_aux >= dead.numel():  # every dead latent is selected: no second top-k
        return pre_dead, columns
    if pre.device.type == "cpu" and _few_positive(pre_dead[:8], k_aux) and _few_positive(pre_dead, k_aux):
        # No row has more than k_aux positive dead pre-activations (usual in training: dead latents
        # are the ones that stay below zero), so the top-k_aux code is relu(pre_dead) itself and no
        # top-k runs. Eight rows first: a batch that fails mostly fails there, at 1/64 of the full
        # count's cost. The check syncs, so CUDA goes straight to the top-k.
        return pre_dead, columns
    local = _top_positions(pre_dead, k_aux)
    return torch.zeros_like(pre_dead).scatter_(1, local, pre_dead.gather(1, local)), columns


def _top_positions(nonneg: Tensor, k: int) -> Tensor:
    """Column positions of each row's k largest entries of a matrix without negative values. On a
    CPU in float32 their IEEE bits order as int32 does, and torch's top-k runs a third faster on
    int32 (2.4 against 3.7 ms for 160 of 512 columns at batch 512, keys included)."""
    if nonneg.device.type == "cpu" and nonneg.dtype == torch.float32 and not nonneg.requires_grad:
        nonneg = nonneg.view(torch.int32)
    return topk_rows(nonneg, k)[1]


def _few_positive(pre: Tensor, k: int) -> bool:
    """Whether no row of `pre` has more than k positive entries (int16 counts where they fit: half
    the cost of the default int64 conversion of the comparison)."""
    dtype = torch.int16 if pre.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    return int((pre > 0).sum(1, dtype=dtype).max()) <= k


def topk_rows(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`pre.topk(k, dim=-1, sorted=False)` of a [batch, n] matrix (the same values; among equal
    values possibly other indices), in two levels on a CPU when n has room for 8k strided blocks.

    torch's CPU top-k copies every entry of a row into (value, index) pairs before selecting, about
    4 ns an entry. Here one vectorised pass takes the maxima of `n_blocks` strided blocks (column j
    belongs to block j mod n_blocks), a top-k over those maxima picks k blocks, and a top-k over their
    k * n / n_blocks entries finishes: every one of the k largest entries lies in a block whose maximum
    is at least that entry, and fewer than k other blocks can beat it. 1.3-1.8x faster at 512-65,536
    columns (docs/benchmarks.md, #18). CUDA's top-k has no such copy: torch's own runs there."""
    n_blocks = _two_level_blocks(pre, k)
    if not n_blocks:
        return pre.topk(k, dim=-1, sorted=False)
    batch, n = pre.shape
    block_max = pre.view(batch, n // n_blocks, n_blocks).amax(1)
    blocks = block_max.topk(k, dim=-1, sorted=False)[1]
    columns = (blocks.unsqueeze(-1) + torch.arange(0, n, n_blocks, device=pre.device)).view(batch, -1)
    values, pos = pre.gather(1, columns).topk(k, dim=-1, sorted=False)
    return values, columns.gather(1, pos)


def _two_level_blocks(pre: Tensor, k: int) -> int:
    """Blocks for `topk_rows`: 8k, doubled until a block has at most 16 entries (measured best at
    1,024 to 65,536 columns); 0 for torch's own top-k (CUDA, or n not a multiple of the blocks)."""
    if pre.device.type != "cpu" or pre.dim() != 2 or k < 1 or pre.requires_grad:
        return 0
    n, n_blocks = pre.shape[1], 8 * k
    while n // n_blocks > 16:
        n_blocks *= 2
    return n_blocks if n % n_blocks == 0 and n >= 4 * n_blocks else 0


def _select(pre: Tensor, k: int, dead: Tensor | None, k_aux: int, dense: bool) -> TopKSelection:
    values, indices = topk_rows(pre, k)
    if dead is not None and k_aux > 0:
        aux_values, aux_indices = _select_aux(pre, dead, k_aux, dense)
    else:
        aux_values = pre.new_zeros(pre.shape[0], 0)
        aux_indices = torch.zeros(pre.shape[0], 0, dtype=torch.long, device=pre.device)
        dense = False
    return TopKSelection(values.relu(), indices, aux_values, aux_indices, dense)


def _pre_acts(x_c: Tensor, W_enc: Tensor, b_enc: Tensor, columns: Tensor | None = None) -> Tensor:
    """Pre-activations [batch, d_sae] or [batch, len(columns)]. The bias is added in float32 after
    the (autocast) matmul, exactly as the plain reference `x_c @ W_enc + b_enc` does: in a
    bfloat16 epilogue a large bias would swamp the product."""
    if columns is None:
        return torch.mm(x_c, W_enc.to(x_c.dtype)).float().add_(b_enc)
    return torch.mm(x_c, W_enc.index_select(1, columns).to(x_c.dtype)).float().add_(b_enc.index_select(0, columns))


def _split_pays(x_c: Tensor, W_enc: Tensor, k: int, alive: Tensor | None, dead: Tensor | None, k_aux: int, dense: bool) -> bool:
    """Whether to rank the alive and dead latents apart (`_select_split`): only when AuxK's ranking
    of the dead latents holds their top k, and only for a sparse AuxK code, i.e. many dead latents.
    With a dense code the dead block is small, and one top-k over all latents plus a copy of the
    dead columns measured 5% faster (demo patches) than two top-k passes and a merge. The split
    copies W_enc's columns where the plain path copies the dead pre-activations: it pays only when
    the batch's dead block is the larger of the two (not for a 65,536-latent SAE at batch 256)."""
    if dense or dead is None or alive is None or alive.numel() < k or k_aux <= 0:
        return False
    return (k_aux >= k or k_aux >= dead.numel()) and x_c.shape[0] * dead.numel() >= W_enc.numel()


def _select_split(x_c: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, alive: Tensor, dead: Tensor, k_aux: int) -> TopKSelection:
    """`_select`'s result (sparse AuxK code), with the alive and the dead latents' pre-activations
    computed apart (the same matmul, split by columns): the main top-k ranks the alive latents
    plus the k_aux dead ones AuxK already picked, so no top-k scans the dead columns twice and no
    copy of them is cut out of a [batch, d_sae] matrix."""
    pre_dead = _pre_acts(x_c, W_enc, b_enc, dead)
    alive_vals, alive_loc = topk_rows(_pre_acts(x_c, W_enc, b_enc, alive), k)
    dead_vals, dead_loc = topk_rows(pre_dead, k_aux)
    dead_idx = dead[dead_loc]
    values, pos = torch.cat([alive_vals, dead_vals], 1).topk(k, dim=-1, sorted=False)
    indices = torch.cat([alive[alive_loc], dead_idx], 1).gather(1, pos)
    return TopKSelection(values.relu(), indices, dead_vals.relu(), dead_idx, False)


class SparseTopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead: Tensor | None, k_aux: int, dense: bool, alive: Tensor | None):
        x_c = x - b_dec
        if _split_pays(x_c, W_enc, k, alive, dead, k_aux, dense):
            sel = _select_split(x_c, W_enc, b_enc, k, alive, dead, k_aux)
        else:
            sel = _select(_pre_acts(x_c, W_enc, b_enc), k, dead, k_aux, dense)
        ctx.k, ctx.aux_dense = k, sel.aux_dense
        ctx.dense_dtype = compute_dtype(x) if use_dense_code(x) else None  # GPU: matmul gradients
        # The decoder's weight gradient groups the same entries (the dense GPU path needs no order).
        order = None if ctx.dense_dtype else latent_order(sel.indices)
        ctx.order = order if sel.aux_dense or sel.aux_indices.shape[1] == 0 else None
        if sel.aux_dense:  # the sparse part is the main code only; the dense block is kept apart
            ctx.save_for_backward(x_c, W_enc, sel.indices, sel.values > 0, dead, sel.aux_values > 0)
        else:
            ctx.save_for_backward(x_c, W_enc, torch.cat([sel.indices, sel.aux_indices], 1),
                                  torch.cat([sel.values > 0, sel.aux_values > 0], 1), None, None)
        ctx.mark_non_differentiable(sel.indices, sel.aux_indices)
        # Unused outputs' gradients stay None: materialised, the index outputs' would be zero
        # tensors the size of the AuxK block, filled every step for nothing.
        ctx.set_materialize_grads(False)
        return sel.values, sel.indices, sel.aux_values, sel.aux_indices, order

    @staticmethod
    def backward(ctx, g_values, _g_idx, g_aux, _g_aux_idx, _g_order):
        x_c, W_enc, indices, active, dead, aux_active = ctx.saved_tensors
        batch, n_sel = indices.shape
        parts = [g_values if g_values is not None else x_c.new_zeros(batch, ctx.k)]
        if n_sel > ctx.k:
            parts.append(g_aux if g_aux is not None else x_c.new_zeros(batch, n_sel - ctx.k))
        g = (torch.cat(parts, 1).float() * active).contiguous()
        need_x, need_b_dec, need_w, need_b = ctx.needs_input_grad[:4]
        g_dead = torch.where(aux_active, g_aux.float(), 0.0) if ctx.aux_dense and g_aux is not None else None
        if ctx.dense_dtype is not None:
            grad_x, grad_w, grad_pre_sum = dense_encoder_grads(x_c, W_enc, indices, g, dead, g_dead, need_x, need_w, ctx.dense_dtype)
        else:
            grad_x, grad_w, grad_pre_sum = _sparse_encoder_grads(x_c, W_enc, indices, g, dead, g_dead, need_x, need_w, ctx.order)
        # b_dec's gradient is minus the row sum of the input gradient, which is W_enc @ (the
        # pre-activation gradient summed over rows): a [d_in, d_sae] matvec instead of gathering
        # the selected encoder columns for every row.
        grad_b_dec = -(W_enc.float() @ grad_pre_sum) if need_b_dec else None
        return grad_x, grad_b_dec, grad_w, grad_pre_sum if need_b else None, None, None, None, None, None


def _sparse_encoder_grads(x_c: Tensor, W_enc: Tensor, indices: Tensor, g: Tensor, dead: Tensor | None, g_dead: Tensor | None,
                          need_x: bool, need_w: bool, order: LatentOrder | None):
    """`SparseTopKEncode`'s (input, W_enc, summed pre-activation) gradients on a CPU: the sparse
    entries grouped by latent, plus the dense AuxK block's matmuls when there is one."""
    grad_x, grad_w_rows, grad_pre_sum = _sparse_grads(x_c, W_enc, indices, g, need_x, need_w, True, order)
    if g_dead is not None:
        if need_x:
            grad_x = grad_x + (g_dead @ W_enc.index_select(1, dead).t().float()).to(x_c.dtype)
        if need_w:
            grad_w_rows.index_add_(0, dead, (g_dead.t() @ x_c.float()).to(grad_w_rows.dtype))
        grad_pre_sum.index_add_(0, dead, g_dead.sum(0))
    # Built in rows (contiguous per latent: the sparse sums and the dense block land without
    # strided writes), handed back in W_enc's layout with one transposing copy.
    return grad_x, grad_w_rows.t().contiguous() if need_w else None, grad_pre_sum


def _sparse_grads(x_c: Tensor, W_enc: Tensor, indices: Tensor, g: Tensor, need_x: bool, need_w: bool, need_sum: bool,
                  order: LatentOrder | None = None):
    """(input, W_enc transposed [d_sae, d_in], summed pre-activation) gradients of the selected
    entries g [batch, n_sel]."""
    d_sae = W_enc.shape[1]
    grad_x = grad_w = grad_pre_sum = None
    flat_idx, flat_g = indices.reshape(-1), g.reshape(-1)
    if need_x:  # rarely: inputs are data
        grad_x = F.embedding_bag(indices, W_enc.t().float().contiguous(), per_sample_weights=g, mode="sum").to(x_c.dtype)
    if need_w:
        grad_w = scatter_rows(*sum_by_latent(indices, g, x_c.float(), order), W_enc.t())
    if need_sum:
        grad_pre_sum = torch.zeros(d_sae, dtype=torch.float32, device=x_c.device).index_add_(0, flat_idx, flat_g)
    return grad_x, grad_w, grad_pre_sum


def sum_by_latent(indices: Tensor, weights: Tensor, dense: Tensor, order: LatentOrder | None = None) -> tuple[Tensor, Tensor]:
    """(latents, sums): the distinct latents in `indices` [batch, n], ascending, and for each the
    sum of weights[r, e] * dense[r] over its entries (r, e): [n_latents_used, d].

    The sparse-transpose-times-dense product of every TopK weight gradient, as one embedding_bag
    over the entries sorted by latent (a bag per latent): on a CPU about as fast as the decode
    itself, where embedding_bag's own backward or a COO sparse product took 2-3 times longer.
    Only the latents used get a row, so a wide SAE trained on small batches writes no rows of
    zeros here; `scatter_rows` places them into the parameter's layout. `order`: `latent_order(indices)`
    when the caller already has it."""
    o = order if order is not None else latent_order(indices)
    sums = F.embedding_bag(o.rows, dense, o.offsets, per_sample_weights=weights.reshape(-1)[o.order], mode="sum")
    return o.latents, sums


def scatter_rows(latents: Tensor, sums: Tensor, like: Tensor) -> Tensor:
    """A gradient shaped like `like` [d_sae, d]: `sums` in the rows `latents`, zeros elsewhere."""
    if latents.numel() == like.shape[0]:  # every latent used: sums already is the whole gradient
        return sums.to(like.dtype)
    # index_add_ into zeros (latents are distinct): a third of index_copy_'s time on this CPU.
    return like.new_zeros(like.shape).index_add_(0, latents, sums.to(like.dtype))


class SparseDecode(torch.autograd.Function):
    """sum_j values[:, j] * W[indices[:, j]]: the TopK decode, W's gradient by `sum_by_latent`."""

    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, W: Tensor, order: LatentOrder | None):
        ctx.save_for_backward(values, indices, W)
        ctx.order = order
        return F.embedding_bag(indices, W, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, g):
        values, indices, W = ctx.saved_tensors
        g = g.contiguous()
        grad_values = _decode_value_grads(g, W, indices) if ctx.needs_input_grad[0] else None
        grad_w = scatter_rows(*sum_by_latent(indices, values, g, ctx.order), W) if ctx.needs_input_grad[2] else None
        return grad_values, None, grad_w, None


def _decode_value_grads(g: Tensor, W: Tensor, indices: Tensor) -> Tensor:
    """The sparse decode's value gradients [batch, n]: one dot product of g's row with W's row per entry."""
    batch, n = indices.shape
    rows = torch.arange(batch, device=g.device).repeat_interleave(n)
    offsets = torch.arange(0, batch * n, n, device=g.device)
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(g, W, indices.reshape(-1), offsets, rows, 0, -1).view(batch, n)


class SparseDecodeDenseAux(torch.autograd.Function):
    """`SparseDecode` and a dense AuxK block's decode (aux [batch, n_dead] times W's rows `dead`) in
    one function, so that W's gradient is one tensor: the block's rows are added into the sparse
    sums in place. As two autograd paths, a second [d_sae, d] gradient was allocated, filled, added
    and freed every step (two passes and 640 page faults a step at demo patches)."""

    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, aux: Tensor, dead: Tensor, W: Tensor, order: LatentOrder | None):
        W_dead = W.index_select(0, dead)
        ctx.save_for_backward(values, indices, aux, dead, W, W_dead)
        ctx.order = order
        ctx.set_materialize_grads(False)
        return F.embedding_bag(indices, W, per_sample_weights=values, mode="sum"), aux @ W_dead

    @staticmethod
    def backward(ctx, g, g_aux):
        values, indices, aux, dead, W, W_dead = ctx.saved_tensors
        need_values, _, need_aux, _, need_w, _ = ctx.needs_input_grad
        g = g.contiguous() if g is not None else torch.zeros(values.shape[0], W.shape[1], dtype=W.dtype, device=W.device)
        grad_values = _decode_value_grads(g, W, indices) if need_values else None
        grad_aux = g_aux @ W_dead.t() if need_aux and g_aux is not None else None
        grad_w = None
        if need_w:
            grad_w = scatter_rows(*sum_by_latent(indices, values, g, ctx.order), W)
            if g_aux is not None:
                grad_w.index_add_(0, dead, aux.t() @ g_aux)
        return grad_values, None, grad_aux, None, grad_w, None


def decode_topk(sel: TopKSelection, W: Tensor) -> tuple[Tensor, Tensor | None]:
    """(main reconstruction [batch, d], AuxK's reconstruction or None) of a TopK selection, in the
    normalised units without b_dec. A dense AuxK code on the CPU in float32 goes through
    `SparseDecodeDenseAux`; otherwise each part is decoded on its own (on a GPU, as dense matmuls;
    under autocast autograd keeps the block's matmul in its dtype)."""
    if sel.aux_dense and not use_dense_code(W) and compute_dtype(W) == torch.float32:
        return SparseDecodeDenseAux.apply(sel.values, sel.indices, sel.aux_values, sel.aux_indices[0], W, sel.order)
    x_hat = sparse_decode(sel.values, sel.indices, W, sel.order)
    if sel.aux_values.shape[1] == 0:
        return x_hat, None
    if sel.aux_dense:  # one matmul with the dead latents' rows
        return x_hat, sel.aux_values @ W.index_select(0, sel.aux_indices[0])
    return x_hat, sparse_decode(sel.aux_values, sel.aux_indices, W)


def sparse_decode(values: Tensor, indices: Tensor, W: Tensor, order: LatentOrder | None = None) -> Tensor:
    """[batch, d]: each row's values [batch, n] times the rows `indices` [batch, n] of W [d_sae, d]
    (`order`: `latent_order(indices)` if the caller has it)."""
    if indices.shape[1] == 0:
        return W.new_zeros(indices.shape[0], W.shape[1])
    if use_dense_code(W):
        return dense_decode(values, indices, W)
    return SparseDecode.apply(values, indices, W, order)


def _dead_columns(dead_mask: Tensor | None, k_aux: int) -> Tensor | None:
    return dead_mask.nonzero().squeeze(1) if dead_mask is not None and k_aux > 0 else None


def _alive_columns(dead_mask: Tensor | None, k_aux: int) -> Tensor | None:
    return (~dead_mask).nonzero().squeeze(1) if dead_mask is not None and k_aux > 0 else None


def topk_encode_plain(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> TopKSelection:
    """Reference: the same selection through plain autograd (dense backward), AuxK always sparse."""
    return _select((x - b_dec) @ W_enc + b_enc, k, _dead_columns(dead_mask, k_aux), k_aux, False)


def topk_encode_sparse(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> TopKSelection:
    """`x` in normalised units, centred on `b_dec` inside."""
    dead = _dead_columns(dead_mask, k_aux)
    dense = dead is not None and dense_aux(k_aux, dead.numel())
    alive = _alive_columns(dead_mask, k_aux)
    values, indices, aux_values, aux_indices, order = SparseTopKEncode.apply(x, b_dec, W_enc, b_enc, k, dead, k_aux, dense, alive)
    return TopKSelection(values, indices, aux_values, aux_indices, dense, order)


topk_encode = topk_encode_plain if os.environ.get("SAESCOPE_SPARSE_ENCODER") == "0" else topk_encode_sparse

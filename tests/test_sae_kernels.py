"""The sparse-backward TopK encoder agrees with plain autograd, AuxK included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sae_core.config import SAEConfig
from sae_core.kernels import (
    _two_level_blocks,
    latent_order,
    scatter_rows,
    sparse_decode,
    sum_by_latent,
    topk_encode_plain,
    topk_encode_sparse,
    topk_rows,
)
from sae_core.model import SparseAutoencoder


def _aux_code(sel, d_sae: int) -> torch.Tensor:
    """The AuxK code as a dense [batch, d_sae] matrix, whichever form the kernel returned."""
    return torch.zeros(sel.aux_values.shape[0], d_sae).scatter(1, sel.aux_indices, sel.aux_values)


# (dead latents' share of d_sae, k_aux, whether the fast kernel keeps the AuxK code dense): few
# dead latents all selected (no second top-k), a large share of them selected, and a small share.
# k_aux below k: the main top-k cannot reuse AuxK's ranking of the dead latents.
AUX_FORMS = {"no aux": (0.0, 0, False), "all dead selected": (0.1, 7, True), "dense": (0.4, 7, True), "sparse": (0.7, 7, False),
             "k_aux below k": (0.7, 3, False), "fewer alive than k": (0.95, 7, False)}


@pytest.mark.parametrize("form", list(AUX_FORMS))
def test_sparse_encoder_matches_plain_autograd(form):
    torch.manual_seed(0)
    dead_share, k_aux, expect_dense = AUX_FORMS[form]
    batch, d_in, d_sae, k = 32, 12, 64, 5
    x = torch.randn(batch, d_in)
    W = torch.randn(d_in, d_sae)
    b = torch.randn(d_sae) * 0.1
    b_dec = torch.randn(d_in) * 0.3
    dead = torch.rand(d_sae) < dead_share if k_aux else None
    if dead is not None:
        k_aux = min(k_aux, int(dead.sum()))
    w_main = torch.randn(batch, d_sae, generator=torch.Generator().manual_seed(1))  # per latent: top-k order is free
    w_aux = torch.randn(batch, d_sae, generator=torch.Generator().manual_seed(2))
    grads, outs = [], []
    for fn in (topk_encode_plain, topk_encode_sparse):
        xs, bds, Ws, bs = (t.clone().requires_grad_(True) for t in (x, b_dec, W, b))
        sel = fn(xs, bds, Ws, bs, k, dead, k_aux)
        aux_code = _aux_code(sel, d_sae)
        loss = (sel.values * w_main.gather(1, sel.indices)).sum() + (aux_code ** 2 * w_aux).sum()
        loss.backward()
        order = sel.indices.argsort(1)
        outs.append((sel.values.gather(1, order), sel.indices.gather(1, order), aux_code))
        grads.append((xs.grad, bds.grad, Ws.grad, bs.grad))
        assert sel.aux_dense == (fn is topk_encode_sparse and expect_dense)
    for a, b_ in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b_)
    if k_aux:
        assert (outs[1][2] != 0).sum(1).max() <= k_aux
        assert (outs[1][2][:, ~dead] == 0).all()  # AuxK only ever picks dead latents
    for a, b_ in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)
    if k_aux:
        dead_cols = grads[1][2][:, dead]
        assert dead_cols.abs().sum() > 0  # AuxK trains the dead latents' encoder columns


def _plain_decode(values, indices, W, order=None):
    return F.embedding_bag(indices, W, per_sample_weights=values, mode="sum")


def _one_step_per_kernel(monkeypatch, d_sae: int, dead_every: int, bf16: bool = False) -> list:
    """A TopK SAE's loss and backward on the same data and seed, first with the plain kernels, then
    with the fast ones (every `dead_every`-th latent dead, for AuxK): [(output, sae)] for each."""
    import sae_core.kernels as kernels
    import sae_core.model as model

    torch.manual_seed(0)
    x = torch.randn(64, 16)
    runs = []
    for fn, decode in ((topk_encode_plain, _plain_decode), (topk_encode_sparse, sparse_decode)):
        monkeypatch.setattr(model, "topk_encode", fn)
        monkeypatch.setattr(model, "sparse_decode", decode)
        monkeypatch.setattr(kernels, "sparse_decode", decode)  # decode_topk's own parts
        torch.manual_seed(0)
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=4, d_in=16, d_sae=d_sae))
        sae.init_from_data(x)
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[::dead_every] = True
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = sae(x, dead)
        out.loss.backward()
        runs.append((out, sae))
    return runs


# AuxK code sparse, dense, every dead latent selected; 128 latents: the two-level top-k (`topk_rows`)
@pytest.mark.parametrize("dead_every,d_sae", [(2, 96), (3, 96), (16, 96), (2, 128), (3, 128)])
def test_topk_forward_loss_and_gradients_do_not_depend_on_the_kernel(monkeypatch, dead_every, d_sae):
    """The whole training loss of the fast path (sparse encoder, dense or sparse AuxK code, custom
    decode backward) against plain autograd: values and every parameter's gradient."""
    runs = _one_step_per_kernel(monkeypatch, d_sae, dead_every)
    results = [(out.loss.detach(), out.aux.detach(), {n: p.grad.clone() for n, p in sae.named_parameters()}) for out, sae in runs]
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[::dead_every] = True
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert float(results[1][1]) > 0
    for name in results[0][2]:
        torch.testing.assert_close(results[0][2][name], results[1][2][name], rtol=1e-5, atol=1e-6, msg=name)
    assert results[1][2]["W_dec"][dead].abs().sum() > 0  # the dead latents' decoder rows learn too


def test_under_bfloat16_autocast_both_kernels_select_the_same_values():
    """The mixed-precision path (CUDA's default) adds the bias in float32 in both kernels, so a
    large shared bias does not round the sparse kernel's values (it did inside a bf16 addmm)."""
    torch.manual_seed(0)
    x, W = torch.randn(64, 32), torch.randn(32, 256) / 6
    b = torch.randn(256) * 0.1 - 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = topk_encode_plain(x, torch.zeros(32), W, b, 8, None, 0)
        sparse = topk_encode_sparse(x, torch.zeros(32), W, b, 8, None, 0)
    assert sparse.values.dtype == plain.values.dtype == torch.float32
    order_p, order_s = plain.indices.argsort(1), sparse.indices.argsort(1)
    assert torch.equal(plain.indices.gather(1, order_p), sparse.indices.gather(1, order_s))
    assert torch.equal(plain.values.gather(1, order_p), sparse.values.gather(1, order_s))


def test_sparse_decode_matches_embedding_bag_values_and_gradients():
    """The decode's custom backward (per-latent sums over entries sorted by latent) equals the
    plain embedding_bag's autograd, with latents repeated across rows and latents never chosen."""
    gen = torch.Generator().manual_seed(3)
    batch, n, d_sae, d = 40, 9, 30, 7
    indices = torch.stack([torch.randperm(d_sae - 5, generator=gen)[:n] for _ in range(batch)])  # latents 25..29 unused
    values, W = torch.randn(batch, n, generator=gen), torch.randn(d_sae, d, generator=gen)
    g = torch.randn(batch, d, generator=gen)
    results = []
    for decode in (lambda v, w: F.embedding_bag(indices, w, per_sample_weights=v, mode="sum"),
                   lambda v, w: sparse_decode(v, indices, w)):
        v, w = values.clone().requires_grad_(True), W.clone().requires_grad_(True)
        out = decode(v, w)
        out.backward(g)
        results.append((out.detach(), v.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert results[1][2][d_sae - 5:].abs().sum() == 0 and results[1][2][: d_sae - 5].abs().sum() > 0


def test_sum_by_latent_is_the_sparse_transpose_product():
    gen = torch.Generator().manual_seed(4)
    indices = torch.randint(0, 50, (20, 15), generator=gen)  # repeats within rows too; some latents unused
    weights, dense = torch.randn(20, 15, generator=gen), torch.randn(20, 6, generator=gen)
    truth = torch.zeros(50, 6)
    for r in range(20):
        for j, w in zip(indices[r].tolist(), weights[r].tolist()):
            truth[j] += w * dense[r]
    latents, sums = sum_by_latent(indices, weights, dense)
    assert latents.tolist() == sorted(set(indices.flatten().tolist()))
    torch.testing.assert_close(scatter_rows(latents, sums, torch.empty(50, 6)), truth, rtol=1e-5, atol=1e-5)
    every = torch.arange(50).repeat(20, 1)  # every latent used: the sums are the gradient itself
    latents, sums = sum_by_latent(every, torch.ones(20, 50), dense)
    torch.testing.assert_close(scatter_rows(latents, sums, torch.empty(50, 6)), dense.sum(0).expand(50, 6))


@pytest.mark.parametrize("dead_every", [2, 3])  # sparse and dense AuxK codes
def test_under_bfloat16_autocast_the_fast_training_loss_matches_plain(monkeypatch, dead_every):
    """CUDA trains under bfloat16 autocast: the dense AuxK matmul then runs in bfloat16 too, and the
    fast path's loss and gradients stay within bfloat16 rounding of the plain computation's."""
    runs = _one_step_per_kernel(monkeypatch, 96, dead_every, bf16=True)
    results = [(out.recon.detach(), out.aux.detach(), sae.W_enc.grad.clone(), sae.W_dec.grad.clone()) for out, sae in runs]
    assert float(results[1][1]) > 0
    for a, b in zip(*results):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("shape,k", [((37, 1024), 16), ((8, 512), 16), ((5, 6144), 32), ((3, 96), 4), ((6, 1000), 16)])
def test_two_level_topk_returns_the_k_largest_of_each_row(shape, k):
    """`topk_rows` against torch.topk: the same values per row, indices pointing at them, no index
    twice; on integer-valued rows full of ties too. (96 and 1,000 columns: torch's own top-k.)"""
    gen = torch.Generator().manual_seed(5)
    for pre in (torch.randn(shape, generator=gen), torch.randint(-4, 5, shape, generator=gen).float()):
        values, indices = topk_rows(pre, k)
        truth = pre.topk(k, dim=-1).values
        assert torch.equal(values.sort(1, descending=True).values, truth)
        assert torch.equal(pre.gather(1, indices), values)
        assert all(len(set(row)) == k for row in indices.tolist())
    assert (_two_level_blocks(pre, k) > 0) == (shape[1] in (1024, 512, 6144))


def test_auxk_code_without_a_top_k_when_no_row_has_more_positive_dead_latents_than_k_aux():
    """Dead latents far below zero (as in training): the AuxK code is relu of their pre-activations,
    with no second top-k, and equals the plain reference's with every gradient."""
    torch.manual_seed(0)
    batch, d_in, d_sae, k, k_aux = 32, 12, 64, 5, 8
    x, W, b_dec = torch.randn(batch, d_in), torch.randn(d_in, d_sae) / 4, torch.zeros(d_in)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[::3] = True  # 22 dead latents, k_aux 8: a dense AuxK code
    b = torch.where(dead, -1.5, 0.0)
    pre_dead = ((x - b_dec) @ W + b)[:, dead]
    assert (pre_dead > 0).sum(1).max() <= k_aux < (pre_dead > 0).sum()
    grads, codes = [], []
    for fn in (topk_encode_plain, topk_encode_sparse):
        xs, Ws, bs = x.clone(), W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        sel = fn(xs, b_dec, Ws, bs, k, dead, k_aux)
        code = _aux_code(sel, d_sae)
        (code.pow(2).sum() + sel.values.sum()).backward()
        codes.append(code)
        grads.append((Ws.grad, bs.grad))
    torch.testing.assert_close(codes[1][:, dead], pre_dead.relu())  # hidden truth: every positive dead latent
    torch.testing.assert_close(codes[0], codes[1])
    for a, b_ in zip(*grads):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)


def test_the_encoder_shares_its_latent_order_with_the_decoder(monkeypatch):
    """The main code's entries are grouped by latent once per step (`SparseTopKEncode`); grouping
    with that order gives the sums of grouping afresh."""
    monkeypatch.setenv("SAESCOPE_DENSE_CODE", "0")  # the sparse kernels' order (CUDA's path has none)
    torch.manual_seed(0)
    x, W, b = torch.randn(40, 10), torch.randn(10, 64), torch.zeros(64)
    sel = topk_encode_sparse(x, torch.zeros(10), W, b, 6, None, 0)
    fresh = latent_order(sel.indices)
    for a, b_ in zip(sel.order, fresh):
        assert torch.equal(a, b_)
    dense = torch.randn(40, 7)
    for a, b_ in zip(sum_by_latent(sel.indices, sel.values, dense, sel.order), sum_by_latent(sel.indices, sel.values, dense)):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("dead_every", [2, 5, 16])  # AuxK code sparse, dense, every dead latent selected
def test_the_gpu_dense_code_path_matches_the_sparse_kernels(monkeypatch, autocast, dead_every):
    """`sae_core.dense_code` (CUDA's path: the code scattered into [batch, d_sae] and matmuls), run
    here on the CPU with SAESCOPE_DENSE_CODE=1, against the CPU's sparse kernels: loss and every
    gradient, in float32 and under bfloat16 autocast (within its rounding)."""
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    results = []
    for mode in ("0", "1"):
        monkeypatch.setenv("SAESCOPE_DENSE_CODE", mode)
        torch.manual_seed(0)
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=4, d_in=16, d_sae=128))
        sae.init_from_data(x)
        dead = torch.zeros(128, dtype=torch.bool)
        dead[::dead_every] = True
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = sae(x, dead)
        out.loss.backward()
        results.append((out.recon.detach(), out.aux.detach(), {n: p.grad.clone() for n, p in sae.named_parameters()}))
    tol = dict(rtol=0.05, atol=0.02) if autocast else dict(rtol=1e-5, atol=1e-6)
    assert float(results[1][1]) > 0
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)
    for name in results[0][2]:
        torch.testing.assert_close(results[0][2][name], results[1][2][name], **tol, msg=name)


def test_dense_decode_adds_a_latent_repeated_in_a_row_as_embedding_bag_does():
    """BatchTopK pads its rows with (latent 0, value 0) entries: the dense decode must add repeated
    latents, not let one write over another."""
    from sae_core.dense_code import dense_decode

    gen = torch.Generator().manual_seed(6)
    indices = torch.randint(0, 12, (30, 9), generator=gen)
    indices[:, -3:] = 0  # padding on top of real entries for latent 0
    values, W = torch.randn(30, 9, generator=gen), torch.randn(12, 5, generator=gen)
    values[:, -3:] = 0.0
    results = []
    for decode in (lambda v, w: F.embedding_bag(indices, w, per_sample_weights=v, mode="sum"),
                   lambda v, w: dense_decode(v, indices, w)):
        v, w = values.clone().requires_grad_(True), W.clone().requires_grad_(True)
        out = decode(v, w)
        out.backward(torch.ones_like(out))
        results.append((out.detach(), v.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

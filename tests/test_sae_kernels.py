"""The sparse-backward TopK encoder agrees with plain autograd, AuxK included."""

from __future__ import annotations

import pytest
import torch

from sae_core.config import SAEConfig
from sae_core.kernels import topk_encode_plain, topk_encode_sparse
from sae_core.model import SparseAutoencoder


@pytest.mark.parametrize("with_aux", [False, True])
def test_sparse_encoder_matches_plain_autograd(with_aux):
    torch.manual_seed(0)
    batch, d_in, d_sae, k, k_aux = 32, 12, 64, 5, 7
    x = torch.randn(batch, d_in)
    W = torch.randn(d_in, d_sae)
    b = torch.randn(d_sae) * 0.1
    b_dec = torch.randn(d_in) * 0.3
    dead = torch.rand(d_sae) < 0.4 if with_aux else None
    grads = []
    outs = []
    for fn in (topk_encode_plain, topk_encode_sparse):
        xs, bds, Ws, bs = (t.clone().requires_grad_(True) for t in (x, b_dec, W, b))
        sel = fn(xs, bds, Ws, bs, k, dead, k_aux if with_aux else 0)
        w_main = torch.randn(batch, k, generator=torch.Generator().manual_seed(1))
        loss = (sel.values * w_main).sum()
        if with_aux:
            loss = loss + (sel.aux_values ** 2).sum()
        loss.backward()
        order = sel.indices.argsort(1)
        outs.append((sel.values.gather(1, order), sel.indices.gather(1, order), sel.aux_indices.sort(1).values))
        grads.append((xs.grad, bds.grad, Ws.grad, bs.grad))
    for a, b_ in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b_)
    for a, b_ in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)
    if with_aux:
        dead_cols = grads[1][2][:, dead]
        assert dead_cols.abs().sum() > 0  # AuxK trains the dead latents' encoder columns


def test_topk_forward_loss_and_gradients_do_not_depend_on_the_kernel(monkeypatch):
    import sae_core.model as model

    torch.manual_seed(0)
    x = torch.randn(64, 16)
    results = []
    for fn in (topk_encode_plain, topk_encode_sparse):
        monkeypatch.setattr(model, "topk_encode", fn)
        torch.manual_seed(0)
        sae = SparseAutoencoder(SAEConfig(arch="topk", k=4, d_in=16, d_sae=96))
        sae.init_from_data(x)
        dead = torch.zeros(96, dtype=torch.bool)
        dead[::3] = True
        out = sae(x, dead)
        out.loss.backward()
        results.append((out.loss.detach(), out.aux.detach(), {n: p.grad.clone() for n, p in sae.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert float(results[1][1]) > 0
    for name in results[0][2]:
        torch.testing.assert_close(results[0][2][name], results[1][2][name], rtol=1e-5, atol=1e-6, msg=name)


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

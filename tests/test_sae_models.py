"""SparseAutoencoder in isolation: sparse/dense equivalence, BatchTopK budget, decoder geometry,
input normalisation, feature surgery and the AuxK loss."""

from __future__ import annotations

import pytest
import torch
from sae_helpers import make_atoms, sparse_mix

from sae_core.config import ARCHS, SAEConfig
from sae_core.errors import ConfigError, DataError
from sae_core.model import SparseAutoencoder, geometric_median

D_IN, D_SAE, K = 32, 128, 4


pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _sae(arch: str = "topk", seed: int = 0, **kw) -> SparseAutoencoder:
    torch.manual_seed(seed)
    kw.setdefault("k", K)
    sae = SparseAutoencoder(SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, **kw))
    with torch.no_grad():  # move away from the tied init so encoder and decoder differ
        sae.W_enc.add_(0.1 * torch.randn_like(sae.W_enc))
        sae.b_enc.copy_(0.05 * torch.randn(D_SAE))
        sae.b_dec.copy_(0.1 * torch.randn(D_IN))
    return sae


def _x(n: int = 64, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


# ---- TopK / BatchTopK ------------------------------------------------------------------------
def test_sparse_topk_decode_matches_dense_reference():
    sae = _sae("topk")
    sae.init_from_data(_x(512, seed=2, scale=3.0))
    x = _x(64, scale=3.0)
    values, indices = sae.encode_sparse(x)
    assert values.shape == indices.shape == (64, K)
    dense = sae.encode(x)
    assert ((dense > 0).sum(-1) <= K).all()
    # the sparse code is the dense code's non-zeros
    rebuilt = torch.zeros_like(dense).scatter_(-1, indices, values)
    torch.testing.assert_close(rebuilt, dense, atol=0, rtol=0)
    torch.testing.assert_close(sae.decode_sparse(values, indices), sae.decode(dense), atol=1e-5, rtol=1e-5)
    # the training forward reconstructs the same way
    torch.testing.assert_close(sae(x).x_hat, sae.decode(dense), atol=1e-5, rtol=1e-5)


def test_encode_sparse_refuses_non_topk():
    with pytest.raises(TypeError, match="relu"):
        _sae("relu").encode_sparse(_x())


def test_batchtopk_keeps_exactly_k_times_batch_in_training():
    sae = _sae("batchtopk")
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # every pre-activation positive, so all k*batch kept values count
    x = _x(48)
    sae.train()
    out = sae(x)
    assert int(out.l0.sum()) == K * 48
    assert out.l0.max() > out.l0.min()  # the budget is shared by the batch, not per row
    # the kept activations are the batch's k*batch largest ReLU'd pre-activations
    pre = sae.pre_acts(x).relu().detach()
    cutoff = pre.flatten().topk(K * 48).values.min()
    z_ref = pre * (pre >= cutoff)
    torch.testing.assert_close(out.x_hat, sae.decode(z_ref), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.fired, (z_ref > 0).any(0))
    # the inference threshold is the smallest kept activation (first update: exactly it)
    assert float(sae.threshold) == pytest.approx(float(cutoff.detach()), rel=1e-6)
    assert int(sae.threshold_n) == 1
    sae.eval()
    z = sae.encode(x)
    torch.testing.assert_close(z, pre * (pre > cutoff))
    assert int(sae(x).l0.sum()) == int((z > 0).sum())


def test_batchtopk_threshold_is_running_mean():
    sae = _sae("batchtopk")
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    mins = []
    for seed in range(3):
        x = _x(32, seed=seed)
        pre = sae.pre_acts(x).relu().detach()
        mins.append(float(pre.flatten().topk(K * 32).values.min()))
        sae(x)
    assert float(sae.threshold) == pytest.approx(sum(mins) / 3, rel=1e-5)


# ---- decoder geometry ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_rows_stay_unit_norm_and_grad_is_tangent(arch):
    sae = _sae(arch, aux_k=8)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    atoms = make_atoms(16, D_IN)
    sae.init_from_data(sparse_mix(atoms, 512)[0])
    for step in range(5):
        x, _ = sparse_mix(atoms, 64, seed=10 + step)
        out = sae(x, torch.ones(D_SAE, dtype=torch.bool) if sae.cfg.is_topk_family else None)
        out.loss.backward()
        raw = sae.W_dec.grad.clone()
        sae.remove_parallel_grad()
        # orthogonal to each row, and only the parallel part was removed
        along = (sae.W_dec.grad * sae.W_dec).sum(-1)
        assert along.abs().max() < 1e-6 * max(1.0, float(raw.abs().max()))
        parallel = raw - sae.W_dec.grad
        cross = torch.linalg.cross(parallel[:, :3], sae.W_dec[:, :3].detach())  # parallel is a multiple of the row
        assert cross.abs().max() < 1e-5
        opt.step()
        opt.zero_grad()
        sae.normalize_decoder()
        torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-6, rtol=0)
    assert out.loss.isfinite()


def test_remove_parallel_grad_without_grad_is_noop():
    sae = _sae()
    sae.remove_parallel_grad()
    assert sae.W_dec.grad is None


# ---- input normalisation ---------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.01, 1.0, 250.0])
def test_init_from_data_scales_to_d_in(scale):
    sae = _sae("relu")
    x = _x(2048, seed=3, scale=scale) + 0.5 * scale
    sae.init_from_data(x, b_dec="mean")
    s = float(sae.input_scale)
    assert float((x * s).pow(2).sum(-1).mean()) == pytest.approx(D_IN, rel=1e-4)
    torch.testing.assert_close(sae.b_dec.detach(), (x * s).mean(0), atol=1e-5, rtol=1e-5)
    sae.init_from_data(x, b_dec="zero")
    assert sae.b_dec.abs().max() == 0
    sae.init_from_data(x, b_dec="geometric_median")
    torch.testing.assert_close(sae.b_dec.detach(), geometric_median(x * s), atol=1e-5, rtol=1e-5)


def test_init_from_data_refuses_nan():
    x = _x(16)
    x[3, 2] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        _sae().init_from_data(x)


def test_geometric_median_is_robust():
    pts = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
    pts[:10] = 1e4  # a few far outliers barely move it
    assert geometric_median(pts).norm() < 0.3
    assert pts.mean(0).norm() > 100


def test_encode_decode_apply_and_undo_input_scale():
    """A ReLU SAE with W_dec = [I; -I] reconstructs exactly; decode returns input units."""
    sae = SparseAutoencoder(SAEConfig(arch="relu", d_in=D_IN, d_sae=2 * D_IN))
    eye = torch.eye(D_IN)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
    x = _x(128, scale=300.0)
    sae.init_from_data(x, b_dec="zero")
    s = float(sae.input_scale)
    assert s == pytest.approx(1 / 300.0, rel=0.1)
    z = sae.encode(x)
    torch.testing.assert_close(z[:, :D_IN] - z[:, D_IN:], x * s)  # latents see scaled inputs
    torch.testing.assert_close(sae.decode(z), x, rtol=1e-5, atol=1e-4)  # reconstruction in input units
    torch.testing.assert_close(sae(x).x_hat, x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sae(x).recon, torch.tensor(0.0), atol=1e-9, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_scaled_inputs_give_same_code(arch):
    """Multiplying the data by c and the input scale by 1/c leaves latents unchanged and x_hat * c."""
    sae = _sae(arch)
    x = _x(64)
    sae.init_from_data(x)
    other = _sae(arch)
    other.load_state_dict(sae.state_dict())
    with torch.no_grad():
        other.input_scale.div_(40.0)
    sae.eval()
    other.eval()
    torch.testing.assert_close(other.encode(40.0 * x), sae.encode(x), atol=1e-5, rtol=1e-4)
    z = sae.encode(x)
    torch.testing.assert_close(other.decode(z), 40.0 * sae.decode(z), atol=1e-4, rtol=1e-5)


# ---- surgery ---------------------------------------------------------------------------------
def _surgery_sae() -> tuple[SparseAutoencoder, torch.Tensor]:
    sae = _sae("relu")
    x = _x(8, scale=5.0)
    sae.init_from_data(_x(512, seed=4, scale=5.0))
    return sae, x


def test_surgery_identity_edits_return_input():
    sae, x = _surgery_sae()
    z = sae.encode(x).detach()
    f = int(z[0].argmax())
    x0 = x[:1]
    torch.testing.assert_close(sae.surgery(x0, f, float(z[0, f]), mode="set"), x0, atol=1e-5, rtol=0)
    feats = z[0].topk(3).indices.tolist()
    torch.testing.assert_close(sae.surgery(x0, feats, z[0, feats].tolist(), mode="set"), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.surgery(x, feats, 0.0, mode="add"), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.surgery(x, feats, 1.0, mode="scale"), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode,strength", [("set", 0.0), ("set", [3.0, -1.0, 0.5]), ("add", 2.0), ("add", [1.0, -2.0, 4.0]),
                                           ("scale", 3.0), ("scale", [0.0, 2.0, -1.0])])
def test_surgery_moves_only_along_chosen_decoder_rows(mode, strength):
    sae, x = _surgery_sae()
    z = sae.encode(x).detach()
    feats = [int(z[0].argmax()), 7, 100]
    out = sae.surgery(x, feats, strength, mode=mode)
    s = torch.tensor(strength if isinstance(strength, list) else [strength] * 3)
    old = z[:, feats]
    new = {"set": s.expand_as(old), "add": old + s, "scale": old * s}[mode]
    expected = x + (new - old) @ sae.W_dec[feats].detach() / sae.input_scale
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    # x' - x lies in the span of the chosen decoder rows
    delta = out - x
    basis = sae.W_dec[feats].detach().T  # [d_in, 3]
    coef = torch.linalg.lstsq(basis, delta.T).solution
    assert (basis @ coef - delta.T).abs().max() < 1e-4 * max(1.0, float(delta.abs().max()))
    assert delta.abs().max() > 1e-3  # the edit did something


def test_single_feature_clamp_changes_output_along_that_row():
    sae, x = _surgery_sae()
    z = sae.encode(x).detach()
    f = int(z[0].argmax())
    delta = sae.surgery(x[:1], f, 0.0) - x[:1]
    direction = sae.W_dec[f].detach()
    cos = torch.nn.functional.cosine_similarity(delta[0], direction, dim=0)
    assert float(cos) == pytest.approx(-1.0, abs=1e-5)
    assert float(delta.norm()) == pytest.approx(float(z[0, f] / sae.input_scale), rel=1e-4)


def test_surgery_rejects_bad_arguments():
    sae, x = _surgery_sae()
    with pytest.raises(ValueError, match="out of range"):
        sae.surgery(x, D_SAE, 1.0)
    with pytest.raises(ValueError, match="2 features but 3 strengths"):
        sae.surgery(x, [1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="mode"):
        sae.surgery(x, 1, 1.0, mode="multiply")


# ---- AuxK ------------------------------------------------------------------------------------
def test_auxk_trains_dead_latents_on_detached_residual():
    sae = _sae("topk", aux_k=4)
    sae.init_from_data(_x(256, seed=5, scale=2.0))
    x = _x(8, scale=2.0)
    dead = torch.ones(D_SAE, dtype=torch.bool)
    out = sae(x, dead)
    assert float(out.aux.detach()) > 0
    torch.testing.assert_close(out.loss, out.recon + out.aux)
    sae.zero_grad()
    out.aux.backward()
    # gradient reaches the dead latents' encoder columns (the ones AuxK picked)
    picked = sae.pre_acts(x).relu().topk(4, dim=-1).indices.unique()
    assert 4 <= len(picked) < D_SAE
    enc_grad = sae.W_enc.grad.norm(dim=0)
    assert (enc_grad[picked] > 0).all()
    not_picked = torch.ones(D_SAE, dtype=torch.bool)
    not_picked[picked] = False
    assert enc_grad[not_picked].abs().max() == 0
    # the residual is detached: b_dec only gets gradient through the encoder's pre-activations
    # (pre = (x*s - b_dec) @ W_enc + b_enc), never through the main reconstruction
    torch.testing.assert_close(sae.b_dec.grad, -(sae.W_enc @ sae.b_enc.grad), atol=1e-7, rtol=1e-5)


def test_auxk_gives_no_gradient_to_live_latents():
    sae = _sae("topk", aux_k=8)
    x = _x(64)
    sae.init_from_data(x)
    live = sae.encode(x).gt(0).any(0)
    assert live.any() and (~live).any()
    out = sae(x, ~live)
    sae.zero_grad()
    out.aux.backward()
    assert float(out.aux.detach()) > 0
    assert sae.W_dec.grad[live].abs().max() == 0
    assert sae.W_enc.grad[:, live].abs().max() == 0
    assert sae.b_enc.grad[live].abs().max() == 0
    assert sae.W_dec.grad[~live].abs().sum() > 0


def test_auxk_off_when_nothing_dead_or_coeff_zero():
    x = _x(32)
    sae = _sae("topk")
    assert float(sae(x, torch.zeros(D_SAE, dtype=torch.bool)).aux.detach()) == 0
    assert float(sae(x).aux.detach()) == 0
    off = _sae("topk", aux_coeff=0.0)
    assert float(off(x, torch.ones(D_SAE, dtype=torch.bool)).aux.detach()) == 0


# ---- the other architectures' forward ---------------------------------------------------------
@pytest.mark.parametrize("arch", ["relu", "jumprelu", "gated"])
def test_forward_terms_are_consistent(arch):
    sae = _sae(arch)
    x = _x(64)
    sae.init_from_data(x)
    out = sae(x)
    z = sae.encode(x)
    torch.testing.assert_close(out.x_hat, sae.decode(z), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.l0, (z > 0).sum(-1).float())
    torch.testing.assert_close(out.fired, (z > 0).any(0))
    torch.testing.assert_close(out.loss, out.recon + out.sparsity + out.aux)
    assert float(out.sparsity.detach()) > 0
    out.loss.backward()
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all(), name


def test_jumprelu_threshold_gets_gradient_and_zeroes_below_it():
    sae = _sae("jumprelu", jumprelu_init_threshold=0.5, jumprelu_bandwidth=0.5)
    x = _x(256)
    pre = sae.pre_acts(x)
    z = sae.encode(x)
    torch.testing.assert_close(z, pre * (pre > 0.5))
    sae(x).loss.backward()
    assert sae.log_threshold.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ConfigError, match="k=300 is larger than d_sae=128"):
        SAEConfig(d_in=D_IN, d_sae=128, k=300)
    with pytest.raises(ConfigError, match="k=300 is larger than d_sae=64"):
        SAEConfig(k=300, expansion=2).resolved(32)
    with pytest.raises(ConfigError, match="arch='mystery'"):
        SAEConfig(arch="mystery")
    with pytest.raises(ConfigError, match="l1_coeff=-1"):
        SAEConfig(arch="relu", l1_coeff=-1.0)
    with pytest.raises(ConfigError, match="d_in=16 does not match the activations' width 32"):
        SAEConfig(d_in=16).resolved(32)
    assert SAEConfig(expansion=4).resolved(32).d_sae == 128
    with pytest.raises(ValueError, match="resolved"):
        SparseAutoencoder(SAEConfig())


@pytest.mark.parametrize("field", ["jumprelu_bandwidth", "jumprelu_init_threshold"])
def test_jumprelu_settings_must_be_positive(field):
    from sae_core.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        SAEConfig(arch="jumprelu", **{field: 0.0})

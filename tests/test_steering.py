"""sae_core.steering: edits keep the SAE error term, compose, and refuse bad input."""

from __future__ import annotations

import math

import pytest
import torch

from sae_core.config import SAEConfig
from sae_core.errors import ConfigError
from sae_core.model import SparseAutoencoder
from sae_core.steering import MAX_EDITS, Edit, apply_edits, check_edits, check_mask, edit_code, parse_edit, resolve_units


@pytest.fixture(params=["topk", "relu", "jumprelu", "gated", "batchtopk"])
def sae(request):
    torch.manual_seed(0)
    cfg = SAEConfig(arch=request.param, k=4, d_in=12, d_sae=48)
    m = SparseAutoencoder(cfg)
    with torch.no_grad():
        m.input_scale.fill_(0.7)
        m.b_dec.normal_()
        m.b_enc.normal_(0, 0.5)
    return m


def test_empty_edit_is_identity_bit_for_bit(sae):
    x = torch.randn(5, 3, 12)
    assert apply_edits(sae, x, []) is x
    same = apply_edits(sae, x, [Edit(3, "scale", 1.0)])
    assert torch.equal(same, x)


def test_only_edited_directions_are_added(sae):
    x = torch.randn(7, 12)
    z = sae.encode(x).detach()
    edits = [Edit(3, "add", 2.5), Edit(10, "set", 0.0), Edit(3, "scale", 2.0)]
    out = apply_edits(sae, x, edits)
    z_new = z.clone()
    z_new[:, 3] += 2.5
    z_new[:, 10] = 0.0
    z_new[:, 3] *= 2.0
    want = x + ((z_new - z) @ sae.W_dec.detach()) / sae.input_scale  # hand computation: error term kept
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    want_decoded = x + sae.decode(z_new).detach() - sae.decode(z).detach()  # the formula of the issue
    torch.testing.assert_close(out, want_decoded, rtol=1e-4, atol=1e-4)


def test_token_mask_limits_the_edit(sae):
    x = torch.randn(6, 12)
    mask = torch.tensor([True, False, False, True, False, False])
    out = apply_edits(sae, x, [Edit(5, "add", 3.0)], mask)
    assert torch.equal(out[~mask], x[~mask])
    delta = out[mask] - x[mask]
    torch.testing.assert_close(delta, (3.0 * sae.W_dec[5] / sae.input_scale).detach().expand_as(delta), rtol=1e-5, atol=1e-5)


def test_edit_code_ops_in_order():
    z = torch.tensor([[1.0, 2.0, 0.0]])
    out = edit_code(z, [Edit(0, "add", 1.0), Edit(0, "scale", 3.0), Edit(1, "set", -1.0)])
    assert out.tolist() == [[6.0, -1.0, 0.0]] and z.tolist() == [[1.0, 2.0, 0.0]]


@pytest.mark.parametrize(("text", "edit"), [("12=+3", Edit(12, "add", 3.0)), ("12=-3", Edit(12, "add", -3.0)),
                                            ("12=3", Edit(12, "set", 3.0)), ("40=0", Edit(40, "set", 0.0)),
                                            ("7=*2", Edit(7, "scale", 2.0)), (" 5 = +0.5", Edit(5, "add", 0.5))])
def test_parse_edit(text, edit):
    assert parse_edit(text) == edit


@pytest.mark.parametrize("text", ["12", "x=3", "12=", "12=abc", "12=+nan", "12=inf", "-1=3"])
def test_parse_edit_refuses(text):
    with pytest.raises(ConfigError, match="edit"):
        parse_edit(text)


def test_max_units_multiply_add_and_set_only():
    edits = [Edit(1, "add", 2.0), Edit(2, "set", -1.0), Edit(3, "scale", 0.5)]
    got = resolve_units(edits, "max", {1: 4.0, 2: 10.0, 3: 7.0})
    assert got == [Edit(1, "add", 8.0), Edit(2, "set", -10.0), Edit(3, "scale", 0.5)]
    assert resolve_units(edits, "raw") == edits
    with pytest.raises(ConfigError, match="never fired"):
        resolve_units([Edit(9, "add", 1.0)], "max", {9: 0.0})
    with pytest.raises(ConfigError, match="units"):
        resolve_units(edits, "sigma")


def test_bad_edits_are_refused(sae):
    with pytest.raises(ConfigError, match="feature 48 does not exist"):
        check_edits([Edit(48, "add", 1.0)], 48)
    with pytest.raises(ConfigError, match="at most"):
        check_edits([Edit(1, "add", 1.0)] * (MAX_EDITS + 1), 48)
    for bad in (math.nan, math.inf, "3"):
        with pytest.raises(ConfigError, match="finite"):
            Edit(1, "add", bad)
    with pytest.raises(ConfigError, match="op"):
        Edit(1, "boost", 1.0)
    with pytest.raises(ConfigError, match="mask"):
        check_mask(torch.ones(5, dtype=torch.bool), 16, (4, 4))


def test_cells_mask():
    from sae_core.steering import cells_mask

    assert cells_mask(None, 16, (4, 4)) is None
    assert cells_mask([0, 5], 16, (4, 4)).nonzero().flatten().tolist() == [0, 5]
    with pytest.raises(ConfigError, match=r"patch 16 is not a cell of the 4x4 grid .*outside cells 0..15"):
        cells_mask([3, 16], 16, (4, 4))
    with pytest.raises(ConfigError, match="none"):
        cells_mask([], 16, (4, 4))
    with pytest.raises(ConfigError, match="no patches"):
        cells_mask([0], 1, None)

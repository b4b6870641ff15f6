"""`saescope export --format saelens|sparsify`: the exported checkpoint gives the same latents on
the same raw activations, read back through sae_core's importers and recomputed in numpy from
the exported files alone (the libraries' documented encoders)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from precompute.cli import main as cli_main
from precompute.export import ExportConfig, export_sae
from sae_core.checkpoint import load, save
from sae_core.config import SAEConfig
from sae_core.formats import detect
from sae_core.model import SparseAutoencoder

D_IN, D_SAE, K = 12, 40, 5


def _sae(arch: str, seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, k=K))
    with torch.no_grad():
        for p in (sae.b_enc, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.3)
        sae.input_scale.fill_(0.37)  # inputs ~2.7x larger than the SAE's normalised units
        if arch == "jumprelu":
            sae.log_threshold.copy_(torch.randn(D_SAE) * 0.3 - 1.0)
        if arch == "batchtopk":
            sae.threshold.fill_(0.4)
        if arch == "gated":
            sae.r_mag.copy_(torch.randn(D_SAE) * 0.2)
            sae.b_mag.copy_(torch.randn(D_SAE) * 0.2)
    return sae.eval()


def _numpy_latents(fmt: str, dpath, x: np.ndarray) -> np.ndarray:
    """The libraries' inference encoders, from the exported files only."""
    cfg = json.loads((dpath / "cfg.json").read_text())
    if fmt == "sparsify":
        w = load_file(str(dpath / "sae.safetensors"))
        pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], 0)
        top = np.argsort(-pre, axis=1)[:, :cfg["k"]]
        out = np.zeros_like(pre)
        np.put_along_axis(out, top, np.take_along_axis(pre, top, axis=1), axis=1)
        return out
    w = load_file(str(dpath / "sae_weights.safetensors"))
    centred = x - w["b_dec"]
    arch = cfg["architecture"]
    if arch == "gated":
        gate = centred @ w["W_enc"] + w["b_gate"]
        mag = centred @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"]
        return (gate > 0) * np.maximum(mag, 0)
    pre = centred @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return np.maximum(pre, 0)
    if arch == "jumprelu":
        return pre * (pre > w["threshold"])
    top = np.argsort(-pre, axis=1)[:, :cfg["k"]]  # topk: top-k pre-activations, then ReLU
    out = np.zeros_like(pre)
    np.put_along_axis(out, top, np.maximum(np.take_along_axis(pre, top, axis=1), 0), axis=1)
    return out


@pytest.mark.parametrize(("fmt", "arch"), [("saelens", "relu"), ("saelens", "topk"), ("saelens", "jumprelu"), ("saelens", "batchtopk"),
                                           ("saelens", "gated"), ("sparsify", "topk")])
def test_exported_sae_encodes_like_the_original(tmp_path, fmt, arch):
    sae = _sae(arch)
    src = save(sae, tmp_path / "run")
    out = export_sae(ExportConfig(sae=str(src), format=fmt, out=str(tmp_path / "exported")))
    assert detect(out).format == fmt and detect(src).format == "saescope"  # neither mistaken for the other
    x = torch.randn(64, D_IN) * 2.7 + 0.5
    with torch.no_grad():
        expected = sae.encode(x)
        reloaded = load(out)
        torch.testing.assert_close(reloaded.encode(x), expected, atol=1e-4, rtol=1e-4)
        x_hat = sae.decode(expected)
        torch.testing.assert_close(reloaded.decode(expected), x_hat, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(_numpy_latents(fmt, out, x.numpy()), expected.numpy(), atol=1e-4, rtol=1e-4)
    assert float(expected.count_nonzero()) > 0


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    src = save(_sae("relu"), tmp_path / "run")
    code = cli_main(["export", "--sae", str(src), "--format", "sparsify", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "sparsify SAEs are TopK; this SAE is relu" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    (tmp_path / "taken").mkdir()
    assert cli_main(["export", "--sae", str(src), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["export", "--sae", str(src), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "sae_weights.safetensors").is_file()

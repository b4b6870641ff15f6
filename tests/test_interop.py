"""Loading SAEs saved by SAELens, sparsify, saev and dictionary_learning (sae_core.interop).

The fixtures in tests/fixtures/interop/ were written by scripts/make_interop_fixtures.py with the
original libraries, together with each library's own latents and reconstruction of an input
batch (`expected.safetensors`); these tests need only the fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sae_core
from sae_core.errors import FormatError
from sae_core.formats import detect
from sae_core.interop import load_foreign

FIXTURES = Path(__file__).parent / "fixtures" / "interop"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.safetensors").exists())
EXPECTED_ARCH = {
    "saelens-standard": "relu",
    "saelens-topk": "topk",
    "saelens-jumprelu": "jumprelu",
    "saelens-gated": "gated",
    "saelens-batchtopk": "batchtopk",
    "sparsify-topk": "topk",
    "saev-relu": "relu",
    "dictionary_learning-relu": "relu",
    "dictionary_learning-relu-new": "relu",
    "dictionary_learning-topk": "topk",
    "dictionary_learning-batchtopk": "batchtopk",
    "dictionary_learning-matryoshka": "batchtopk",
    "dictionary_learning-jumprelu": "jumprelu",
    "dictionary_learning-gated": "gated",
}


def test_every_fixture_is_covered():
    assert set(CASES) == set(EXPECTED_ARCH)


@pytest.mark.parametrize("name", CASES)
def test_matches_original_library(name):
    expected = load_file(FIXTURES / name / "expected.safetensors")
    sae = sae_core.load(FIXTURES / name)
    assert sae.cfg.arch == EXPECTED_ARCH[name]
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (16, 64)
    with torch.no_grad():
        z = sae.encode(expected["x"])
        x_hat = sae.decode(z)
    assert (z != 0).any(), "fixture should have active latents"
    torch.testing.assert_close(z, expected["z"], atol=1e-5, rtol=0)
    assert torch.equal(z != 0, expected["z"] != 0)
    torch.testing.assert_close(x_hat, expected["x_hat"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["saelens-topk", "sparsify-topk", "dictionary_learning-topk"])
def test_topk_sparse_path_agrees(name):
    expected = load_file(FIXTURES / name / "expected.safetensors")
    sae = sae_core.load(FIXTURES / name)
    code = sae.encode_sparse(expected["x"])
    torch.testing.assert_close(sae.decode_sparse(code.values, code.indices), expected["x_hat"], atol=1e-5, rtol=0)


def test_loaded_sae_round_trips_through_saescope_format(tmp_path):
    expected = load_file(FIXTURES / "saelens-jumprelu" / "expected.safetensors")
    sae_core.save(sae_core.load(FIXTURES / "saelens-jumprelu"), tmp_path / "own")
    again = sae_core.load(tmp_path / "own")
    torch.testing.assert_close(again.encode(expected["x"]), expected["z"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("relpath", "fmt"),
    [
        ("saelens-gated/sae_weights.safetensors", "saelens"),
        ("sparsify-topk/sae.safetensors", "sparsify"),
        ("saev-relu/sae.pt", "saev"),
        ("dictionary_learning-gated/ae.pt", "dictionary_learning"),
        ("saev-relu", "saev"),
    ],
)
def test_weight_file_paths_are_accepted(relpath, fmt):
    assert detect(FIXTURES / relpath).format == fmt
    assert load_foreign(FIXTURES / relpath).cfg.d_sae == 64


def test_dictionary_learning_without_config_uses_state_dict_keys(tmp_path):
    shutil.copy(FIXTURES / "dictionary_learning-gated" / "ae.pt", tmp_path / "ae.pt")
    expected = load_file(FIXTURES / "dictionary_learning-gated" / "expected.safetensors")
    sae = sae_core.load(tmp_path)
    torch.testing.assert_close(sae.encode(expected["x"]), expected["z"], atol=1e-5, rtol=0)


def test_unknown_format_names_path_and_formats(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(FormatError) as e:
        sae_core.load(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg
    for name in ("SAELens", "sparsify", "saev", "dictionary_learning"):
        assert name in msg


def test_folder_of_several_saes_asks_for_one(tmp_path):
    for name in ("saelens-topk", "saelens-gated"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    with pytest.raises(FormatError, match="several SAEs"):
        sae_core.load(tmp_path)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("saelens-topk", "sae_weights.safetensors"),
        ("sparsify-topk", "sae.safetensors"),
        ("saev-relu", "sae.pt"),
        ("dictionary_learning-topk", "ae.pt"),
    ],
)
def test_corrupt_weights_raise_format_error(tmp_path, name, weights):
    dpath = tmp_path / name
    shutil.copytree(FIXTURES / name, dpath)
    data = (dpath / weights).read_bytes()
    if weights == "sae.pt":  # keep saev's JSON header line, break what follows it
        header_end = data.index(b"\n") + 1
        (dpath / weights).write_bytes(data[:header_end] + b"not a torch file")
    else:
        (dpath / weights).write_bytes(data[: len(data) // 3])
    with pytest.raises(FormatError, match="corrupt|unreadable"):
        sae_core.load(dpath)


def test_missing_weights_raise_format_error(tmp_path):
    dpath = tmp_path / "sparsify"
    shutil.copytree(FIXTURES / "sparsify-topk", dpath)
    (dpath / "sae.safetensors").unlink()
    with pytest.raises(FormatError):
        sae_core.load(dpath)


def test_missing_tensor_is_named(tmp_path):
    dpath = tmp_path / "saelens"
    shutil.copytree(FIXTURES / "saelens-jumprelu", dpath)
    tensors = load_file(dpath / "sae_weights.safetensors")
    del tensors["threshold"]
    from safetensors.torch import save_file

    save_file(tensors, dpath / "sae_weights.safetensors")
    with pytest.raises(FormatError, match="threshold"):
        sae_core.load(dpath)


@pytest.mark.parametrize(
    ("name", "patch", "match"),
    [
        ("saelens-standard", {"normalize_activations": "layer_norm"}, "layer_norm"),
        ("saelens-standard", {"architecture": "abstopk"}, "abstopk"),
        ("sparsify-topk", {"transcode": True}, "transcoder"),
        ("sparsify-topk", {"activation": "groupmax"}, "groupmax"),
    ],
)
def test_unrepresentable_configs_are_refused(tmp_path, name, patch, match):
    dpath = tmp_path / name
    shutil.copytree(FIXTURES / name, dpath)
    cfg = json.loads((dpath / "cfg.json").read_text())
    (dpath / "cfg.json").write_text(json.dumps(cfg | patch))
    with pytest.raises(FormatError, match=match):
        sae_core.load(dpath)


def test_saev_unknown_schema_is_refused(tmp_path):
    data = (FIXTURES / "saev-relu" / "sae.pt").read_bytes()
    body = data[data.index(b"\n") + 1:]
    (tmp_path / "sae.pt").write_bytes(json.dumps({"schema": 99, "cfg": {}}).encode() + b"\n" + body)
    with pytest.raises(FormatError, match="schema 99"):
        sae_core.load(tmp_path / "sae.pt")


def test_saev_schema2_header_folds_b_dec(tmp_path):
    """saev's later releases encode x @ W_enc + b_enc (no b_dec subtraction) and may use TopK."""
    data = (FIXTURES / "saev-relu" / "sae.pt").read_bytes()
    body = data[data.index(b"\n") + 1:]
    header = {"schema": 2, "cfg": {"d_vit": 16, "exp_factor": 4, "activation": {"cls": "TopK", "params": {"top_k": 5}}}}
    (tmp_path / "sae.pt").write_bytes(json.dumps(header).encode() + b"\n" + body)
    sae = sae_core.load(tmp_path / "sae.pt")
    import io

    state = torch.load(io.BytesIO(body), weights_only=True)
    x = load_file(FIXTURES / "saev-relu" / "expected.safetensors")["x"]
    pre = x @ state["W_enc"] + state["b_enc"]
    values, indices = pre.topk(5, dim=-1)
    want = torch.zeros_like(pre).scatter_(-1, indices, values.relu())
    assert sae.cfg.arch == "topk" and sae.cfg.k == 5
    torch.testing.assert_close(sae.encode(x), want, atol=1e-5, rtol=0)


def test_saescope_checkpoint_named_by_its_weights_file(tmp_path):
    sae_core.save(sae_core.load(FIXTURES / "sparsify-topk"), tmp_path / "own")
    assert sae_core.load(tmp_path / "own" / "sae.safetensors").cfg.arch == "topk"


def test_foreign_checkpoints_with_non_finite_weights_are_refused(tmp_path):
    """A diverged run saved by another library must not load and turn every activation into NaN."""
    from safetensors.torch import save_file

    from sae_core.errors import DataError

    src = Path(__file__).parent / "fixtures" / "interop" / "saelens-topk"
    dst = shutil.copytree(src, tmp_path / "saelens-topk")
    weights = next(p for p in dst.glob("*.safetensors") if p.name != "expected.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, weights)
    with pytest.raises(DataError, match="weights contain NaN or inf"):
        sae_core.load(dst)

"""Checkpoints: save/load round trips, the cfg.json contract, broken files, and resuming a killed run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sae_helpers import REPO, read_metrics, subprocess_env, synthetic_store
from safetensors.torch import load_file

from sae_core.checkpoint import CFG_FILE, WEIGHTS_FILE, load, read_cfg, save
from sae_core.config import ARCHS, SAEConfig
from sae_core.contract import SAESCOPE_VERSION, SCHEMA_VERSION
from sae_core.errors import FormatError
from sae_core.model import SparseAutoencoder
from sae_core.training import TrainConfig

D_IN, D_SAE = 16, 48
CONTRACT = REPO / "docs" / "data-contract.md"


pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _contract_table(section: str, header: str) -> list[list[str]]:
    """Rows of the first table under `## section` whose first column is `header`."""
    text = CONTRACT.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    table = body.split(f"| {header} |", 1)[1].split("\n\n", 1)[0]
    rows = [ln for ln in table.splitlines()[2:] if ln.startswith("|")]
    return [[c.strip().strip("`") for c in ln.strip("|").split("|")] for ln in rows]


def _random_sae(arch: str, seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, k=5, l1_coeff=1.5, aux_k=3))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        sae.normalize_decoder()
        sae.input_scale.fill_(0.37)
        if arch == "batchtopk":
            sae.threshold.fill_(0.21)
            sae.threshold_n.fill_(17)
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(tmp_path, arch):
    sae = _random_sae(arch)
    metrics = {"mse": 0.1, "fvu": 0.2, "explained_variance": 0.8, "l0": 5.0, "dead_fraction": 0.0, "n_tokens": 10}
    save(sae, tmp_path, train_cfg=TrainConfig(store="s"), store={"store_id": "s"}, n_tokens_trained=1234, metrics=metrics)
    loaded = load(tmp_path)
    assert loaded.cfg == sae.cfg
    a, b = sae.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    for k in a:
        if k == "threshold_n":  # a training-time counter, not part of the checkpoint
            continue
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(1)) * 3
    sae.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(sae.encode(x), loaded.encode(x))
        assert torch.equal(sae.decode(sae.encode(x)), loaded.decode(loaded.encode(x)))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic writes leave no temp files

    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    assert cfg["schema_version"] == SCHEMA_VERSION and cfg["kind"] == "sae"
    assert cfg["sae"]["arch"] == arch and cfg["sae"]["d_in"] == D_IN and cfg["sae"]["d_sae"] == D_SAE
    assert cfg["input_scale"] == pytest.approx(0.37)
    assert cfg["train"]["store"] == "s" and cfg["store"] == {"store_id": "s"}
    assert cfg["n_tokens_trained"] == 1234 and cfg["metrics"] == metrics
    assert cfg["saescope_version"] == SAESCOPE_VERSION
    assert cfg["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", cfg["git_commit"])

    # the tensors of the contract, float32, with the documented shapes
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    shapes = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,), "threshold": (), "input_scale": (),
              "log_threshold": (D_SAE,), "r_mag": (D_SAE,), "b_mag": (D_SAE,)}
    documented = set()
    for name, _shape, archs in _contract_table("SAE checkpoint", "tensor"):
        if archs.startswith("all") or arch in re.findall(r"[a-z]+", archs):
            documented |= {n.strip() for n in name.split(",")}
    assert set(tensors) == documented
    for name in documented:
        assert tensors[name].dtype == torch.float32 and tuple(tensors[name].shape) == shapes[name], name
    torch.testing.assert_close(tensors["W_dec"].norm(dim=-1), torch.ones(D_SAE))


def test_cfg_json_has_the_contract_keys(tmp_path):
    keys = [row[0] for row in _contract_table("SAE checkpoint", "key")]
    assert keys == ["schema_version", "kind", "sae", "input_scale", "train", "store", "n_tokens_trained", "metrics",
                    "weights", "saescope_version", "git_commit"]
    save(_random_sae("topk"), tmp_path)
    assert set(json.loads((tmp_path / CFG_FILE).read_text())) == set(keys)


def test_trained_checkpoint_matches_contract(tmp_path):
    store, _ = synthetic_store(tmp_path / "store", n=1024, d_in=D_IN, n_atoms=16)
    from sae_core.training import train

    result = train(TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(arch="jumprelu", d_sae=D_SAE),
                               batch_size=128, n_tokens=1024))
    cfg = read_cfg(result.run_dpath)
    keys = [row[0] for row in _contract_table("SAE checkpoint", "key")]
    assert set(cfg) == set(keys)
    assert {"mse", "fvu", "explained_variance", "l0", "dead_fraction", "n_tokens"} <= set(cfg["metrics"])
    assert cfg["metrics"] == result.metrics
    summary_keys = {"store_id", "model", "layer", "token_selection", "grid", "d_in"}
    assert summary_keys <= set(cfg["store"]) and cfg["store"]["store_id"] == "store" and cfg["store"]["d_in"] == D_IN
    assert cfg["train"]["sae"]["arch"] == "jumprelu" and cfg["n_tokens_trained"] == 1024
    sae = load(result.run_dpath)
    assert float(sae.input_scale) == pytest.approx(cfg["input_scale"])
    log_keys = {"step", "n_tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "lr", "tokens_per_s"}
    assert all(set(r) == log_keys for r in read_metrics(result.run_dpath))
    # the resumable state is removed once the run is finished
    assert sorted(p.name for p in result.run_dpath.iterdir()) == ["cfg.json", "metrics.jsonl", "sae.safetensors"]


# ---- broken checkpoints ---------------------------------------------------------------------------
@pytest.fixture
def ckpt(tmp_path) -> Path:
    return save(_random_sae("topk"), tmp_path / "ckpt")


def test_missing_weights(ckpt):
    (ckpt / WEIGHTS_FILE).unlink()
    with pytest.raises(FormatError, match=r"sae\.safetensors: missing or corrupt weights"):
        load(ckpt)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_corrupt_weights(ckpt, damage):
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    (ckpt / WEIGHTS_FILE).write_bytes({"garbage": b"not a safetensors file at all", "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(FormatError, match=r"sae\.safetensors: missing or corrupt weights"):
        load(ckpt)


def test_weights_of_another_arch(ckpt, tmp_path):
    save(_random_sae("gated"), tmp_path / "gated")
    (ckpt / WEIGHTS_FILE).write_bytes((tmp_path / "gated" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(FormatError, match=r"do not match the topk config.*unexpected \['b_mag', 'r_mag'\]"):
        load(ckpt)


def test_unknown_schema_version(ckpt):
    cfg = json.loads((ckpt / CFG_FILE).read_text())
    (ckpt / CFG_FILE).write_text(json.dumps(cfg | {"schema_version": SCHEMA_VERSION + 41}))
    with pytest.raises(FormatError, match=rf"cfg\.json: schema version {SCHEMA_VERSION + 41} is not supported"):
        load(ckpt)


def test_invalid_sae_config(ckpt):
    cfg = json.loads((ckpt / CFG_FILE).read_text())
    (ckpt / CFG_FILE).write_text(json.dumps(cfg | {"sae": cfg["sae"] | {"k": 1000}}))
    with pytest.raises(FormatError, match=r"cfg\.json: invalid SAE config \(k=1000 is larger than d_sae=48"):
        load(ckpt)
    (ckpt / CFG_FILE).write_text(json.dumps(cfg | {"sae": cfg["sae"] | {"colour": "red"}}))
    with pytest.raises(FormatError, match="invalid SAE config"):
        load(ckpt)


def test_corrupt_cfg_json_read_cfg(ckpt):
    (ckpt / CFG_FILE).write_text('{"schema_version": 1, "kind": "sae", ')
    with pytest.raises(FormatError, match=r"cfg\.json: corrupt JSON"):
        read_cfg(ckpt)


def test_corrupt_cfg_json_load(ckpt):
    (ckpt / CFG_FILE).write_text('{"schema_version": 1, "kind": "sae", ')
    with pytest.raises(FormatError, match=r"cfg\.json"):
        load(ckpt)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FormatError, match="no such SAE checkpoint"):
        load(tmp_path / "nope")


def test_corrupt_training_state(tmp_path):
    from sae_core.training import train

    store, _ = synthetic_store(tmp_path / "store", n=512, d_in=D_IN, n_atoms=16)
    cfg = TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(d_sae=D_SAE, k=4), batch_size=128, n_tokens=512,
                      keep_state=True)
    run = train(cfg).run_dpath
    (run / CFG_FILE).unlink()
    good = (run / "state" / "state.pt").read_bytes()
    for damaged in (good[: len(good) // 2], b"half a pickle"):
        (run / "state" / "state.pt").write_bytes(damaged)
        with pytest.raises(FormatError, match=r"state\.pt: corrupt training state"):
            train(cfg)
    assert not (run / CFG_FILE).exists()


# ---- resume after SIGKILL ------------------------------------------------------------------------
def _resume_cfg(store: Path, out: Path) -> TrainConfig:
    return TrainConfig(store=str(store), out=str(out), sae=SAEConfig(arch="batchtopk", d_sae=64, k=4, aux_k=8), lr=3e-3,
                       batch_size=128, n_epochs=2, dead_after_tokens=512, checkpoint_every_tokens=512, log_every=2, seed=3)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """SIGKILL a training subprocess once it has saved state, resume it, compare with an uninterrupted run."""
    from sae_core.training import train

    store, _ = synthetic_store(tmp_path / "store", n=4096, d_in=D_IN, n_atoms=24)
    n_steps = -(-2 * (4096 - 204) // 128)
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from pathlib import Path\n"
            "sys.path.insert(0, 'tests')\n"
            "from test_sae_checkpoint import _resume_cfg\n"
            "from sae_core.training import train\n"
            "train(_resume_cfg(Path(sys.argv[1]), Path(sys.argv[2])))\n")
    killed = subprocess.Popen([sys.executable, "-c", code, str(store), str(tmp_path / "a")], cwd=REPO, env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    state = None
    while time.monotonic() < deadline and killed.poll() is None:
        found = list((tmp_path / "a").glob("*/state/state.pt"))
        if found:
            state = found[0]
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = killed.communicate(timeout=30)
    assert state is not None, f"the run ended before writing a resumable state: {err}"
    assert killed.returncode == -signal.SIGKILL
    run_a = state.parent.parent
    assert not (run_a / CFG_FILE).exists()
    step = torch.load(state, weights_only=True)["step"]
    assert 0 < step < n_steps, step

    resumed = train(_resume_cfg(store, tmp_path / "a"))  # picks up the state file
    reference = train(_resume_cfg(store, tmp_path / "b"))
    assert not resumed.reused and resumed.run_dpath == run_a
    run_b = reference.run_dpath
    assert run_a.name == run_b.name
    a, b = load_file(run_a / WEIGHTS_FILE), load_file(run_b / WEIGHTS_FILE)
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the training log was truncated to the resumed step, then continued identically
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run_a)]
    ref = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run_b)]
    assert strip == ref and ref[-1]["step"] == n_steps
    assert resumed.metrics == reference.metrics
    assert read_cfg(run_a)["n_tokens_trained"] == read_cfg(run_b)["n_tokens_trained"]


def test_resume_tolerates_torn_log_line(tmp_path):
    from sae_core.training import train

    store, _ = synthetic_store(tmp_path / "store", n=512, d_in=D_IN, n_atoms=16)
    cfg = TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(d_sae=D_SAE, k=4), batch_size=64, n_tokens=512,
                      log_every=1, checkpoint_every_tokens=128, keep_state=True)
    run = train(cfg).run_dpath
    (run / CFG_FILE).unlink()  # as if killed after the final state but before cfg.json
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "n_tok')  # a half-written line
    result = train(cfg)
    assert [r["step"] for r in read_metrics(result.run_dpath)] == list(range(1, 9))

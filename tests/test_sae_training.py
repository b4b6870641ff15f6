"""train(): ground-truth recovery, every architecture's sparsity, bad input, idempotency, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import torch
from sae_helpers import REPO, make_atoms, max_cosine, read_metrics, sparse_mix, subprocess_env, synthetic_store, write_store  # noqa: F401

from precompute.cli import build_parser, main
from sae_core.checkpoint import load
from sae_core.config import SAEConfig
from sae_core.errors import ConfigError, DataError, FormatError, SaescopeError
from sae_core.training import TrainConfig, train

D_IN, D_SAE, K = 32, 128, 4


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """4096 samples of 4-sparse mixtures of 32 atoms in 32 dims, in two shards."""
    path, atoms = synthetic_store(tmp_path_factory.mktemp("store") / "s", n=4096, n_atoms=32, shard_samples=3000)
    return path, atoms


# ---- ground truth ------------------------------------------------------------------------------
def test_topk_recovers_ground_truth_dictionary(tmp_path):
    store, atoms = synthetic_store(tmp_path / "store", n=8192, d_in=D_IN, n_atoms=32, n_active=4, noise=0.01)
    result = train(TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(arch="topk", d_sae=D_SAE, k=K),
                               lr=3e-3, batch_size=256, n_epochs=5, seed=0))
    assert not result.reused
    sae = load(result.run_dpath)
    cos = max_cosine(atoms, sae.W_dec.detach())
    assert float(cos.mean()) >= 0.9, cos
    assert float(cos.min()) >= 0.8, cos
    m = result.metrics
    assert m["explained_variance"] >= 0.9, m
    n_eval = int(0.05 * 8192)  # eval_fraction: the last 5% of the samples are held out
    assert m["n_tokens"] == n_eval
    assert m["l0"] == pytest.approx(K, abs=0.05)
    # held-out metrics recomputed independently from the loaded checkpoint agree
    x, _ = sparse_mix(atoms, 8192, 4, 0.01, seed=1)
    held = x[-n_eval:]
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(held))
    fvu = float((held - x_hat).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
    assert 1 - fvu == pytest.approx(m["explained_variance"], abs=1e-4)


# ---- every architecture -----------------------------------------------------------------------
ARCH_CFGS = {
    "topk": SAEConfig(arch="topk", d_sae=D_SAE, k=K),
    "batchtopk": SAEConfig(arch="batchtopk", d_sae=D_SAE, k=K),
    "relu": SAEConfig(arch="relu", d_sae=D_SAE, l1_coeff=2.0),
    "jumprelu": SAEConfig(arch="jumprelu", d_sae=D_SAE, l0_coeff=1e-3),
    "gated": SAEConfig(arch="gated", d_sae=D_SAE, l1_coeff=2.0),
}


@pytest.mark.parametrize("arch", list(ARCH_CFGS))
def test_every_arch_trains_and_reaches_its_sparsity(store, tmp_path, arch):
    path, _ = store
    cfg = TrainConfig(store=str(path), out=str(tmp_path), sae=ARCH_CFGS[arch], lr=3e-3, batch_size=256, n_epochs=6, seed=0, log_every=4)
    result = train(cfg)
    rows = read_metrics(result.run_dpath)
    n_steps = -(-int(6 * (4096 - 204)) // 256)
    assert [r["step"] for r in rows] == list(range(4, n_steps, 4)) + [n_steps]
    for r in rows:
        assert set(r) == {"step", "n_tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "lr", "tokens_per_s"}
        assert r["n_tokens"] == r["step"] * 256
    first, last = rows[0], rows[-1]
    assert last["loss"] < 0.35 * first["loss"], (first, last)
    assert last["lr"] < first["lr"]  # warm-up then linear decay to 0
    m = result.metrics
    assert m["explained_variance"] > 0.5, m
    if arch == "topk":
        assert all(r["l0"] == K for r in rows)
        assert m["l0"] == pytest.approx(K, abs=0.05)
    elif arch == "batchtopk":
        assert all(r["l0"] == pytest.approx(K, abs=1e-6) for r in rows)  # k * batch kept per step
        sae = load(result.run_dpath)
        assert float(sae.threshold) > 0
        assert m["l0"] == pytest.approx(K, rel=0.35)  # the learned threshold gives about k at inference
    else:
        assert first["l0"] > D_SAE / 3
        assert last["l0"] < 0.7 * first["l0"]
        assert m["l0"] < D_SAE / 3, m
    assert 0 <= m["dead_fraction"] < 1


def test_train_is_deterministic_and_idempotent(store, tmp_path):
    path, _ = store
    cfg = TrainConfig(store=str(path), out=str(tmp_path / "a"), sae=SAEConfig(arch="topk", d_sae=64, k=K), batch_size=512, n_tokens=4096)
    first = train(cfg)
    assert not first.reused and (first.run_dpath / "cfg.json").exists()
    mtime = (first.run_dpath / "sae.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = train(cfg)
    assert time.perf_counter() - t0 < 1.0
    assert again.reused and again.run_dpath == first.run_dpath and again.metrics == first.metrics
    assert (first.run_dpath / "sae.safetensors").stat().st_mtime_ns == mtime
    # paths and logging cadence are not part of the run's identity; the folder name is stable
    other = train(dataclasses.replace(cfg, out=str(tmp_path / "b"), log_every=3, checkpoint_every_tokens=1024))
    assert other.run_dpath.name == first.run_dpath.name and not other.reused
    a, b = load(first.run_dpath).state_dict(), load(other.run_dpath).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a different seed is a different run
    assert train(dataclasses.replace(cfg, seed=1)).run_dpath != first.run_dpath


def test_n_tokens_sets_steps_and_patch_store(tmp_path):
    atoms = make_atoms(16, 16)
    x, _ = sparse_mix(atoms, 600 * 4)
    path = write_store(tmp_path / "patches", x, tokens_per_sample=4, shard_samples=250)
    result = train(TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(d_sae=32, k=2), batch_size=100, n_tokens=1050,
                               eval_fraction=0.1, log_every=1))
    rows = read_metrics(result.run_dpath)
    assert len(rows) == 11 and rows[-1]["n_tokens"] == 1100
    assert result.metrics["n_tokens"] == 60 * 4  # held out by sample, all tokens of each
    cfg = json.loads((result.run_dpath / "cfg.json").read_text())
    assert cfg["n_tokens_trained"] == 1100
    assert cfg["store"]["grid"] == [1, 4] and cfg["store"]["tokens_per_sample"] == 4


# ---- bad input --------------------------------------------------------------------------------
def _no_checkpoint(out) -> None:
    assert not list(out.rglob("cfg.json")), "a failed run left a cfg.json behind"
    assert not list(out.rglob("sae.safetensors"))


def test_wrong_width_store(store, tmp_path):
    path, _ = store
    with pytest.raises(ConfigError, match="d_in=16 does not match the activations' width 32"):
        train(TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(d_in=16, d_sae=64, k=4)))
    _no_checkpoint(tmp_path)


def test_nan_activations_refused(tmp_path):
    x, _ = sparse_mix(make_atoms(16, 16), 1000)
    x[123, 5] = float("nan")
    path = write_store(tmp_path / "nan", x)
    with pytest.raises(DataError, match=r"NaN or inf.*clean the activations") as e:
        train(TrainConfig(store=str(path), out=str(tmp_path / "out"), sae=SAEConfig(d_sae=32, k=2), batch_size=100))
    assert str(path) in str(e.value)
    _no_checkpoint(tmp_path / "out")


def test_nan_in_held_out_rows_refused(tmp_path):
    """NaN only in the held-out split must not end in a checkpoint with NaN metrics."""
    x, _ = sparse_mix(make_atoms(16, 16), 1000)
    x[-1, 0] = float("inf")
    path = write_store(tmp_path / "nan", x)
    with pytest.raises(DataError, match="NaN or inf"):
        train(TrainConfig(store=str(path), out=str(tmp_path / "out"), sae=SAEConfig(d_sae=32, k=2), batch_size=100))
    _no_checkpoint(tmp_path / "out")


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1e-3), "lr=-0.001 must be positive"),
    (dict(lr=0.0), "lr=0.0 must be positive"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(eval_fraction=1.0), "eval_fraction=1.0"),
    (dict(n_epochs=0.0), "n_epochs"),
    (dict(warmup_frac=2.0), "warmup_frac"),
])
def test_bad_train_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(store="x", **kwargs)


def test_k_larger_than_d_sae(store, tmp_path):
    path, _ = store
    with pytest.raises(ConfigError, match="k=129 is larger than d_sae=128"):
        TrainConfig(store=str(path), sae=SAEConfig(d_sae=128, k=129))
    with pytest.raises(ConfigError, match="k=300 is larger than d_sae=64"):  # d_sae from expansion * d_in
        train(TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(expansion=2, k=300)))
    _no_checkpoint(tmp_path)


def test_missing_and_broken_stores(tmp_path):
    with pytest.raises(ConfigError, match="no activation store"):
        train(TrainConfig(out=str(tmp_path)))
    with pytest.raises(FormatError, match="manifest.json: not found"):
        train(TrainConfig(store=str(tmp_path / "nowhere"), out=str(tmp_path)))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    with pytest.raises(FormatError, match="manifest.json: corrupt JSON"):
        train(TrainConfig(store=str(bad), out=str(tmp_path)))
    x, _ = sparse_mix(make_atoms(8, 8), 100)
    path = write_store(tmp_path / "v", x)
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(m | {"schema_version": 99}))
    with pytest.raises(FormatError, match="schema version 99 is not supported"):
        train(TrainConfig(store=str(path), out=str(tmp_path)))
    (path / "manifest.json").write_text(json.dumps(m | {"d_in": 9}))
    with pytest.raises(FormatError, match="does not match d_in=9"):
        train(TrainConfig(store=str(path), out=str(tmp_path)))
    (path / "manifest.json").write_text(json.dumps(m))
    (path / "shard-00000.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(FormatError, match="not a readable safetensors file"):
        train(TrainConfig(store=str(path), out=str(tmp_path)))
    empty = tmp_path / "empty"
    write_store(empty, torch.zeros(0, 8))
    with pytest.raises(DataError, match="empty"):
        train(TrainConfig(store=str(empty), out=str(tmp_path)))
    assert not list(tmp_path.rglob("cfg.json"))


def test_failed_run_leaves_no_cfg_json(store, tmp_path, monkeypatch):
    """A run that dies mid-way keeps its resumable state but never writes cfg.json."""
    path, _ = store
    import sae_core.training as train_mod

    def boom(self):
        raise RuntimeError("evaluation crashed")

    original = train_mod._Trainer.evaluate
    monkeypatch.setattr(train_mod._Trainer, "evaluate", boom)
    cfg = TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(d_sae=64, k=K), batch_size=512, n_tokens=2048)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train(cfg)
    run = next(tmp_path.iterdir())
    assert (run / "state" / "state.pt").exists() and (run / "metrics.jsonl").exists()
    _no_checkpoint(tmp_path)
    monkeypatch.setattr(train_mod._Trainer, "evaluate", original)
    assert train(cfg).run_dpath == run and (run / "cfg.json").exists()


# ---- CLI --------------------------------------------------------------------------------------
def _train_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_train_help_lists_every_field():
    actions = {a.dest: a for a in _train_parser()._actions}
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name != "sae"] + list(dataclasses.fields(SAEConfig))
    for f in fields:
        assert f.name in actions, f"--{f.name} missing from `saescope train --help`"
        help_text = actions[f.name].help.split(" (default:")[0].strip()
        assert help_text, f"--{f.name} has no help text"
        flag = "--" + f.name.replace("_", "-")
        assert actions[f.name].option_strings in ([flag], [flag, "--no-" + flag[2:]])  # booleans also get --no-
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "train", "--help"], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for f in fields:
        assert "--" + f.name.replace("_", "-") in out.stdout


def test_cli_parses_into_configs(tmp_path):
    from precompute.cli_args import dataclass_from_args

    args = _train_parser().parse_args(["--store", "s", "--arch", "relu", "--l1-coeff", "3", "--lr", "0.01", "--d-sae", "64"])
    cfg = dataclass_from_args(TrainConfig, args)
    assert cfg.store == "s" and cfg.lr == 0.01 and cfg.sae == SAEConfig(arch="relu", l1_coeff=3.0, d_sae=64)


def test_cli_train_bad_store_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    proc = subprocess.run([sys.executable, "-m", "precompute.cli", "train", "--store", str(bad), "--out", str(tmp_path / "out")],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("saescope train: error: ") and "manifest.json: corrupt JSON" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_cli_train_and_info(store, tmp_path, capsys):
    path, _ = store
    argv = ["train", "--store", str(path), "--out", str(tmp_path), "--d-sae", "64", "--k", "4", "--batch-size", "512",
            "--n-tokens", "4096", "--lr", "0.003", "--name", "cli"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained ") and "explained variance" in out
    run = next(tmp_path.iterdir())
    assert run.name.startswith("cli-")
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("reused ")
    assert main(["info", str(run)]) == 0
    info = capsys.readouterr().out
    cfg = json.loads((run / "cfg.json").read_text())
    m = cfg["metrics"]
    assert "architecture  topk (k=4)" in info
    assert "d_in=32  d_sae=64  (x2)" in info
    assert f"trained on    {4096:,} tokens" in info
    assert "synthetic layer synthetic (pooled)" in info
    assert f"explained variance {m['explained_variance']:.4f}" in info and f"L0 {m['l0']:.2f}" in info
    assert f"({m['n_tokens']:,} tokens)" in info
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_info_store(store, capsys):
    path, _ = store
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4,096 samples, 4,096 tokens, d_in=32, float32, 2 shards" in out


def test_package_exports_train_function():
    import inspect

    import sae_core
    import sae_core.training  # noqa: F401  (any earlier import of the submodule has the same effect)

    assert inspect.isfunction(sae_core.train)


def test_errors_are_saescope_errors():
    for cls in (ConfigError, DataError, FormatError):
        assert issubclass(cls, SaescopeError)


@pytest.mark.parametrize("arch", list(ARCH_CFGS))
def test_bfloat16_autocast_trains_every_arch(store, tmp_path, arch):
    """precision=bfloat16 runs the CUDA default (bf16 autocast, float32 weights) on the CPU, so
    the GPU's mixed-precision paths (sparse kernels, AuxK, gates) are exercised without a GPU."""
    path, _ = store
    common = dict(store=str(path), sae=ARCH_CFGS[arch], lr=3e-3, batch_size=256, n_epochs=2, seed=0, log_every=2)
    mixed = train(TrainConfig(out=str(tmp_path / "bf16"), precision="bfloat16", **common))
    exact = train(TrainConfig(out=str(tmp_path / "fp32"), precision="float32", **common))
    assert mixed.run_dpath.name != exact.run_dpath.name
    rows = read_metrics(mixed.run_dpath)
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], (rows[0], rows[-1])
    sae = load(mixed.run_dpath)
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    assert mixed.metrics["explained_variance"] == pytest.approx(exact.metrics["explained_variance"], abs=0.05)
    assert mixed.metrics["mse"] != exact.metrics["mse"]  # autocast really ran in bfloat16


def test_auto_precision_is_resolved_in_the_run_identity(store):
    """A run started on a CPU (float32) must not be resumed on a GPU (bfloat16) as the same run."""
    from sae_core.store import ActivationStore
    from sae_core.training import run_dpath_for

    path, _ = store
    s = ActivationStore(path)
    auto = run_dpath_for(TrainConfig(store=str(path), device="cpu"), s)
    assert auto == run_dpath_for(TrainConfig(store=str(path), device="cpu", precision="float32"), s)
    assert auto != run_dpath_for(TrainConfig(store=str(path), device="cpu", precision="bfloat16"), s)


def test_requested_n_tokens_is_part_of_the_run_identity(store, tmp_path):
    """Asking for more tokens must train a new run, not hand back the shorter one."""
    path, _ = store
    common = dict(store=str(path), out=str(tmp_path), sae=ARCH_CFGS["topk"], batch_size=64, seed=0)
    short = train(TrainConfig(n_tokens=640, **common))
    longer = train(TrainConfig(n_tokens=1280, **common))
    assert not longer.reused and longer.run_dpath != short.run_dpath
    assert json.loads((longer.run_dpath / "cfg.json").read_text())["n_tokens_trained"] == 1280


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(lr=float("nan")), "lr=nan must be a finite number"), (dict(lr=float("inf")), "lr=inf must be a finite"),
    (dict(n_epochs=float("inf")), "n_epochs=inf"), (dict(log_every=0), "log_every=0 must be positive"),
    (dict(weight_decay=-1.0), "weight_decay=-1.0 must not be negative"), (dict(seed=-1), "seed=-1"),
    (dict(grad_clip=-1.0), "grad_clip"), (dict(dead_after_tokens=-1), "dead_after_tokens"),
    (dict(sae=dict(arch="relu", l1_coeff=float("nan"))), "l1_coeff=nan"),
])
def test_non_finite_and_negative_numbers_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        if "sae" in kwargs:
            kwargs = {**kwargs, "sae": SAEConfig(**kwargs["sae"])}
        TrainConfig(store="x", **kwargs)


def test_a_diverging_run_stops_and_leaves_no_checkpoint(store, tmp_path):
    path, _ = store
    with pytest.raises(DataError, match="training diverged at step .*lower --lr"):
        train(TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(arch="relu", d_sae=D_SAE, l1_coeff=1.0),
                          lr=1e30, batch_size=256, n_tokens=2048, log_every=1, grad_clip=0.0))
    assert not list(tmp_path.rglob("cfg.json")) and not list(tmp_path.rglob("sae.safetensors"))


def test_threaded_batch_prefetch_trains_the_same_weights(store, tmp_path, monkeypatch):
    """GPU runs load batch step+1 on a thread; the batches, and so the weights, must not change."""
    import sae_core.training as training

    path, _ = store
    cfg = dict(store=str(path), sae=ARCH_CFGS["topk"], batch_size=128, n_tokens=4096, seed=3)
    inline = load(train(TrainConfig(out=str(tmp_path / "inline"), **cfg)).run_dpath)

    class Threaded(training._Prefetcher):
        def __init__(self, load, first, stop, threaded):
            super().__init__(load, first, stop, threaded=True)

    monkeypatch.setattr(training, "_Prefetcher", Threaded)
    threaded = load(train(TrainConfig(out=str(tmp_path / "threaded"), **cfg)).run_dpath)
    for (name, a), (_, b) in zip(inline.state_dict().items(), threaded.state_dict().items()):
        assert torch.equal(a, b), name


# ---- runs that must not report success (issue 14) ------------------------------------------------
@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_a_finite_explosion_stops_like_nan(store, tmp_path, arch):
    """lr=1e6 used to save a finished run with explained variance -2.9e30: finite, but no SAE."""
    path, _ = store
    with pytest.raises(DataError, match=r"training diverged at step \d+ .*FVU .*lower --lr"):
        train(TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(arch=arch, d_sae=D_SAE, k=K), lr=1e6,
                          batch_size=256, n_tokens=4096))
    assert not list(tmp_path.rglob("cfg.json")) and not list(tmp_path.rglob("sae.safetensors"))


def test_impossible_sizes_are_refused_up_front_with_the_memory_needed(store, tmp_path, capsys):
    from sae_core.training import memory_needed

    path, _ = store
    out = tmp_path / "out"
    assert main(["train", "--store", str(path), "--out", str(out), "--expansion", "100000", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    need = memory_needed(SAEConfig(d_in=D_IN, d_sae=100000 * D_IN), 8192)
    assert len(err) == 1 and f"{need / 2**30:,.1f} GiB" in err[0] and "--expansion" in err[0], err
    assert not out.exists()


def test_reuse_checks_that_the_weights_exist_and_are_readable(store, tmp_path, caplog):
    path, _ = store
    cfg = TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(arch="topk", d_sae=64, k=K), batch_size=512, n_tokens=2048)
    first = train(cfg)
    weights = first.run_dpath / "sae.safetensors"
    good = weights.read_bytes()
    for damage in (lambda: weights.unlink(), lambda: weights.write_bytes(good[:-8]), lambda: weights.write_bytes(b"x" * len(good))):
        damage()
        again = train(cfg)
        assert not again.reused and weights.read_bytes() == good  # trained again, to the same weights
        assert "training the run again" in caplog.text  # a logged warning (stderr under the CLI)
        caplog.clear()
    assert train(cfg).reused


def test_training_state_is_removed_when_done_unless_kept(store, tmp_path):
    path, _ = store
    cfg = TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(arch="topk", d_sae=64, k=K), batch_size=512, n_tokens=2048)
    run = train(cfg).run_dpath
    assert not (run / "state").exists()
    kept = train(dataclasses.replace(cfg, keep_state=True))
    assert kept.reused and kept.run_dpath == run  # keep_state is not part of the run's identity
    run2 = train(dataclasses.replace(cfg, seed=5, keep_state=True)).run_dpath
    assert (run2 / "state" / "state.pt").is_file()
    train(dataclasses.replace(cfg, seed=5))  # reused, and the state it no longer needs is removed
    assert not (run2 / "state").exists()


def test_resumed_state_must_belong_to_the_run(store, tmp_path):
    path, _ = store
    cfg = TrainConfig(store=str(path), out=str(tmp_path), sae=SAEConfig(arch="topk", d_sae=64, k=K), batch_size=512, n_tokens=2048,
                      keep_state=True)
    other = train(dataclasses.replace(cfg, seed=1)).run_dpath
    mine = train(cfg).run_dpath
    (mine / "cfg.json").unlink()  # as if killed before the end
    (mine / "state" / "state.pt").write_bytes((other / "state" / "state.pt").read_bytes())
    with pytest.raises(FormatError, match=r"training state of another run \(differs in seed\); delete .*state to restart"):
        train(cfg)
    assert not (mine / "cfg.json").exists()


def test_metrics_log_is_rewritten_atomically_on_resume(store, tmp_path, monkeypatch):
    """A disk error while the log is cut back to the resumed step leaves the old log whole."""
    import os

    import sae_core.contract as contract
    from sae_core.training import _truncate_log

    log = tmp_path / "metrics.jsonl"
    lines = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6))
    log.write_text(lines + '{"step": 6, "lo')

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    real_fsync = os.fsync
    monkeypatch.setattr(contract.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        _truncate_log(log, 3)
    monkeypatch.setattr(contract.os, "fsync", real_fsync)
    assert log.read_text() == lines + '{"step": 6, "lo' and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    _truncate_log(log, 3)
    assert [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [1, 2, 3]


def test_data_without_variance_is_not_taken_for_a_diverged_run(tmp_path):
    """FVU divides by the data's variance: rows that are all equal must not trip the explosion check."""
    x = torch.ones(512, 8) * torch.arange(1.0, 9.0)
    path = write_store(tmp_path / "flat", x)
    result = train(TrainConfig(store=str(path), out=str(tmp_path / "out"), sae=SAEConfig(arch="relu", d_sae=16), batch_size=64,
                               n_tokens=512, log_every=1))
    assert (result.run_dpath / "sae.safetensors").is_file() and not result.reused

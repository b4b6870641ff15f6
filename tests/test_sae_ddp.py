"""Distributed training on CPU (gloo, 2 ranks) matches single-process training with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from sae_helpers import REPO, free_port, read_metrics, subprocess_env, synthetic_store
from safetensors.torch import load_file

from sae_core.checkpoint import read_cfg
from sae_core.config import SAEConfig
from sae_core.training import TrainConfig, train

pytestmark = [pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"),
              pytest.mark.usefixtures("single_thread_torch")]

WORLD = 2




def _cfg(store: Path, out: Path) -> TrainConfig:
    # aux_coeff=0: AuxK normalises by each rank's own residual variance, so it is not rank-invariant
    return TrainConfig(store=str(store), out=str(out), sae=SAEConfig(arch="topk", d_sae=64, k=4, aux_coeff=0.0), lr=3e-3,
                       batch_size=256, n_epochs=2, log_every=4, device="cpu", seed=5)


_RANK = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
sys.path.insert(0, "tests")
from test_sae_ddp import _cfg
from sae_core.training import train
result = train(_cfg(Path(sys.argv[1]), Path(sys.argv[2])))
print("RUN", result.run_dpath, result.reused)
"""


def test_ddp_matches_single_process(tmp_path):
    store, _ = synthetic_store(tmp_path / "store", n=3072, d_in=16, n_atoms=24)
    port = str(free_port())
    procs = []
    for rank in range(WORLD):
        env = subprocess_env(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK, str(store), str(tmp_path / "ddp")], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    single = train(_cfg(store, tmp_path / "single"))  # runs while the ranks start up
    outputs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err
        outputs.append(out)
    runs = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("RUN")}
    assert len(runs) == 1  # every rank agrees on the run folder
    ddp_run = Path(runs.pop())
    assert ddp_run.name == single.run_dpath.name  # the world size is not part of the run's identity

    a, b = load_file(ddp_run / "sae.safetensors"), load_file(single.run_dpath / "sae.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
    ca, cb = read_cfg(ddp_run), read_cfg(single.run_dpath)
    assert ca["n_tokens_trained"] == cb["n_tokens_trained"] == -(-2 * (3072 - 153) // 256) * 256
    for key in ("mse", "fvu", "explained_variance", "l0"):
        assert ca["metrics"][key] == pytest.approx(cb["metrics"][key], rel=1e-3, abs=1e-6), key
    assert ca["metrics"]["n_tokens"] == cb["metrics"]["n_tokens"]
    # only rank 0 writes: one log, with one line per logged step
    rows = read_metrics(ddp_run)
    assert [r["step"] for r in rows] == [r["step"] for r in read_metrics(single.run_dpath)]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]  # it trained, so agreeing is not trivial


_RANK_STATE = """
import sys, torch
torch.set_num_threads(1)
import sae_core.training as T
from sae_core.config import SAEConfig
calls = []
orig_resample, orig_run = T.resample_dead, T._Trainer.run
def resample(*args):
    calls.append(1)
    return orig_resample(*args)
def run(self):
    result = orig_run(self)
    torch.save(self.sae.state_dict(), f"{sys.argv[2]}/rank{self.dist.rank}.pt")
    return result
T.resample_dead, T._Trainer.run = resample, run
cfg = T.TrainConfig(store=sys.argv[1], out=sys.argv[2] + "/out", sae=SAEConfig(arch="jumprelu", d_sae=64, jumprelu_init_threshold=50.0),
                    lr=3e-3, batch_size=256, n_epochs=2, log_every=4, device="cpu", seed=5, dead_after_tokens=256, resample_every_tokens=512)
T.train(cfg)
print("RESAMPLED", len(calls))
"""


def test_ranks_stay_identical_when_dead_latents_are_resampled(tmp_path):
    """Each rank resamples from its own slice; rank 0's choice must reach every rank."""
    store, _ = synthetic_store(tmp_path / "store", n=3072, d_in=16, n_atoms=24)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_STATE, str(store), str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(WORLD_SIZE=str(WORLD), RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(WORLD)]
    outs = [p.communicate(timeout=150) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("RESAMPLED" in out and "RESAMPLED 0" not in out for out, _ in outs)  # resampling happened
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name

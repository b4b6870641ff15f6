"""`saescope train --log wandb|tensorboard`: the tracker gets metrics.jsonl's rows; it is imported
only when asked for, and a missing one is one line before anything is written."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

from precompute.cli import main
from sae_core.config import SAEConfig
from sae_core.training import TrainConfig, train
from tests.sae_helpers import read_metrics, synthetic_store


class _FakeRun:
    def __init__(self, **kwargs) -> None:
        self.init_kwargs, self.rows, self.finished = kwargs, [], False

    def log(self, row: dict, step: int) -> None:
        self.rows.append((step, row))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` module (the real one is not installed here) recording what it is sent."""
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.runs = []

    def init(**kwargs):
        module.runs.append(_FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_gets_every_logged_row(tmp_path, fake_wandb):
    store, _ = synthetic_store(tmp_path / "store", n=1024, d_in=16)
    result = train(TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(arch="topk", d_sae=32, k=4), lr=3e-3,
                               batch_size=128, n_epochs=2, seed=0, log_every=4, log="wandb"))
    (run,) = fake_wandb.runs
    rows = read_metrics(result.run_dpath)
    assert len(rows) == 4 and [step for step, _ in run.rows] == [r["step"] for r in rows]
    assert [sent["fvu"] for _, sent in run.rows] == [r["fvu"] for r in rows] and run.finished
    assert run.init_kwargs["config"]["log"] == "wandb" and run.init_kwargs["name"] == result.run_dpath.name
    again = TrainConfig(store=str(store), out=str(tmp_path / "out"), sae=SAEConfig(arch="topk", d_sae=32, k=4), lr=3e-3,
                        batch_size=128, n_epochs=2, seed=0, log_every=4)
    assert train(again).run_dpath == result.run_dpath  # the tracker is not part of the run's identity


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard"])
def test_missing_tracker_is_one_line_and_writes_nothing(tmp_path, capsys, tracker):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    store, _ = synthetic_store(tmp_path / "store", n=256, d_in=8)
    code = main(["train", "--store", str(store), "--out", str(tmp_path / "out"), "--log", tracker])
    err = capsys.readouterr().err
    assert code == 2 and f"pip install {tracker}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_tracker(tmp_path, capsys):
    assert main(["train", "--store", str(tmp_path), "--log", "mlflow"]) == 2
    assert "log='mlflow'; choose wandb or tensorboard" in capsys.readouterr().err

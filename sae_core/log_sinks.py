"""Optional experiment trackers for training metrics (`saescope train --log wandb|tensorboard`).

metrics.jsonl is always written; a tracker gets the same rows. The tracker's package is imported
only when asked for, and a missing one is a one-line error before training starts.
"""

from __future__ import annotations

from pathlib import Path

from sae_core.errors import ConfigError

TRACKERS = ("", "wandb", "tensorboard")


class _NoSink:
    def log(self, row: dict, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class _TensorBoard:
    def __init__(self, run_dpath: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(run_dpath / "tensorboard"))

    def log(self, row: dict, step: int) -> None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dpath: Path, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--log wandb needs the wandb package: pip install wandb (and `wandb login`, or WANDB_MODE=offline)") from None
        self.run = wandb.init(project="saescope", name=run_dpath.name, dir=str(run_dpath), config=config)

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        self.run.finish()


PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}


def check_available(tracker: str) -> None:
    """One line naming the fix when `--log` names an unknown tracker or one not installed."""
    import importlib.util

    if tracker not in TRACKERS:
        raise ConfigError(f"log={tracker!r}; choose wandb or tensorboard (or leave it empty)")
    if tracker and importlib.util.find_spec(PACKAGES[tracker]) is None:
        raise ConfigError(f"--log {tracker} needs the {PACKAGES[tracker]} package: pip install {PACKAGES[tracker]}")


def open_sink(tracker: str, run_dpath: Path, config: dict):
    """The tracker for `--log` (`""`: none), ready to `log(row, step)` and `close()`."""
    if tracker not in TRACKERS:
        raise ConfigError(f"log={tracker!r}; choose wandb or tensorboard (or leave it empty)")
    if tracker == "tensorboard":
        return _TensorBoard(run_dpath)
    if tracker == "wandb":
        return _WandB(run_dpath, config)
    return _NoSink()

"""Shared test setup: quiet progress bars and small synthetic stores and SAEs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SAESCOPE_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("SAESCOPE_PROGRESS", "0")


@pytest.fixture
def single_thread_torch(monkeypatch):
    """One torch thread and no inherited torchrun variables: small training runs then do not
    depend on the machine's load, and the trainer never tries to join a process group."""
    import torch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """The demo pipeline on the first 96 emoji (real EfficientNet-Lite0 weights), built once per
    test session: (DemoConfig, index path). Shared by the end-to-end and live-inspection tests."""
    from precompute.demo import DemoConfig, build_demo

    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(data_root=str(root), limit=96, epochs=20.0, serve=False)
    return cfg, build_demo(cfg)

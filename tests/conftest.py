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

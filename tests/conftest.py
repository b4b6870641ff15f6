"""Shared test setup: quiet progress bars and small synthetic stores and SAEs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SAESCOPE_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("SAESCOPE_PROGRESS", "0")

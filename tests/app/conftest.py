"""One session-scoped fixture index, app and in-process client for all app tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from make_fixture_index import build_fixture_index  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def index_path(tmp_path_factory) -> Path:
    return build_fixture_index(tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="session")
def app(index_path):
    app = create_app(Settings(index=index_path, secret="test-secret"))
    yield app
    app.state.index.close()


@pytest.fixture(scope="session")
def client(app):
    with TestClient(app, follow_redirects=False) as c:
        yield c

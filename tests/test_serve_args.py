"""`saescope serve` refuses impossible --workers and --host values in one line, before the app
starts (issue 14: --workers 0 started a server, a bad host was blamed on the port)."""

from __future__ import annotations

import pytest

from precompute.cli import main


@pytest.fixture
def no_server(monkeypatch):
    import app.main

    monkeypatch.setattr(app.main, "serve", lambda *a, **k: pytest.fail("the server started"))


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers 0: pass 1 or more"),
    (["--workers", "-3"], "--workers -3: pass 1 or more"),
    (["--host", "999.1.1.1"], "--host '999.1.1.1' is neither an IP address nor a known host name; pass 127.0.0.1"),
    (["--host", "bad host!"], "--host 'bad host!' is neither an IP address nor a known host name"),
    (["--host", "192.0.2.1"], "--host '192.0.2.1' is not an address of this machine; pass 127.0.0.1"),  # TEST-NET-1
])
def test_bad_workers_and_hosts_are_one_line_errors(tmp_path, capsys, no_server, args, message):
    index = tmp_path / "x.duckdb"
    index.write_bytes(b"")
    assert main(["serve", str(index), "--port", "18765", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"saescope serve: error: {message}"), err

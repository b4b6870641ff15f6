"""The newcomer's path: README commands, compose file, CLI help, and what `import` pulls in."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from precompute.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gives_exactly_two_setup_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].strip() for ln in quick.strip().splitlines() if ln.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for cmd in commands:
        assert (ROOT / cmd.split()[1]).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_compose_file_is_valid():
    if shutil.which("docker-compose"):
        cmd = ["docker-compose", "config", "-q"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose", "config", "-q"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"^\s+precompute:", text, re.M) and re.search(r"^\s+app:", text, re.M)
    assert re.search(r"^\s+worker:", text, re.M) and "--live-url" in text  # live inspection runs in its own service


def test_every_cli_option_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"extract", "train", "index", "serve", "demo", "info"}
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help and action.help.strip() and not action.help.startswith(" ("), f"{name} {action.option_strings}"


def test_app_and_sae_core_imports_stay_light():
    code = ("import sys, app.main, sae_core; "
            "bad = [m for m in ('torch', 'umap', 'hdbscan') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    code = "import sys, sae_core.model; print(any(m.startswith(('fastapi', 'starlette', 'jinja2')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_serve_refuses_an_unreadable_index_in_one_line(tmp_path):
    bad = tmp_path / "old.duckdb"
    bad.write_bytes(b"not a duckdb file")
    for path in (bad, tmp_path / "missing.duckdb"):
        out = subprocess.run([sys.executable, "-m", "precompute.cli", "serve", str(path), "--port", "1"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert str(path) in out.stderr


def test_serve_on_a_taken_port_is_one_line(tmp_path):
    import socket

    from tests.app.make_fixture_index import build_fixture_index

    index = build_fixture_index(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "precompute.cli", "serve", str(index), "--port", str(port)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0] and "--port" in lines[0]

"""The real server: an OpenAPI fuzz run over HTTP finds no 5xx, and several workers serve one index."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import httpx
import schemathesis
from conftest import REPO, free_port, wait_for_health
from hypothesis import HealthCheck, given, settings
from make_fixture_index import POOLED, build_fixture_index
from schemathesis.checks import not_a_server_error


def test_fuzz_against_the_running_server_finds_no_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    n_ops = 0
    for result in schema.get_all_operations():
        op = result.ok()
        n_ops += 1

        @given(case=op.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=server, checks=[not_a_server_error])

        run()
    assert n_ops >= 15


def test_two_workers_serve_the_same_index(tmp_path):
    index = build_fixture_index(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", "serve", str(index), "--port", str(port), "--workers", "2"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, 60, "server with 2 workers did not start")
        urls = [f"{base}/sae/{POOLED}/feature/{i}.json" for i in range(40)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda u: httpx.get(u, timeout=10).status_code, urls))
        assert codes == [200] * 40
    finally:
        proc.terminate()
        proc.wait(timeout=15)

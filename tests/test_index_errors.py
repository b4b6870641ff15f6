"""`saescope index` failures are one line and exit 2, before anything is built where possible: an
--out that is a folder, a full disk while DuckDB writes, any DuckDB error (issue 14)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sae_helpers import REPO, subprocess_env

from precompute.cli import main
from tests.precompute_helpers import make_dataset, make_sae, make_store

N, D_IN, D_SAE = 40, 6, 12

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ds = make_dataset(root, N)
    store = make_store(root, np.random.default_rng(0).normal(size=(N, D_IN)).astype(np.float32), dataset_dpath=ds)
    return make_sae(root, D_IN, D_SAE, store_dpath=store)


def test_out_pointing_at_a_folder_fails_before_the_build(sae, tmp_path, capsys, monkeypatch):
    import precompute.index as index

    monkeypatch.setattr(index, "_build", lambda *a: pytest.fail("the build started"))
    assert main(["index", "--sae", str(sae), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {tmp_path} is a folder" in err[0] and "explorer.duckdb" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_duckdb_error_is_one_line_and_exit_2(sae, tmp_path, capsys, monkeypatch):
    import precompute.index as index

    def broken(con):
        con.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(index, "finalize", broken)
    assert main(["index", "--sae", str(sae), "--out", str(tmp_path / "x.duckdb"), "--top-n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the index could not be written (CatalogException" in err[0] and "internal error" not in err[0], err
    assert list(tmp_path.iterdir()) == []  # no index, no temporary file


def test_a_full_disk_during_the_build_is_one_line_and_exit_2(sae, tmp_path):
    """RLIMIT_FSIZE makes every write past 1 MB fail with EFBIG, as a full disk fails them with ENOSPC."""
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "from precompute.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "x.duckdb"
    proc = subprocess.run([sys.executable, "-c", code, "index", "--sae", str(sae), "--out", str(out), "--top-n", "4"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(err) == 1 and err[0].startswith("saescope index: error: ") and "internal error" not in err[0], err
    assert list(tmp_path.iterdir()) == []

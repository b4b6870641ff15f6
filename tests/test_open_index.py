"""`saescope.open_index(path)`: the notebook API over a real demo index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import saescope
from sae_core.errors import FormatError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index_fpath(small_demo) -> Path:
    return small_demo[1]


def test_tables_are_relations_matching_the_file(index_fpath):
    with saescope.open_index(index_fpath) as idx:
        assert {"saes", "features", "samples", "feature_top", "feature_page"} <= set(idx.tables)
        with duckdb.connect(str(index_fpath), read_only=True) as con:
            n_features = con.execute("SELECT count(*) FROM features").fetchone()[0]
            sae_ids = sorted(r[0] for r in con.execute("SELECT sae_id FROM saes").fetchall())
            n_first = con.execute("SELECT d_sae FROM saes WHERE sae_id = ?", [sae_ids[0]]).fetchall()[0][0]
            page = json.loads(con.execute("SELECT page FROM feature_page WHERE sae_id = ? AND feature_id = 3", [sae_ids[0]]).fetchone()[0])
        assert len(idx.features) == n_features > 0
        assert sorted(idx.saes.df()["sae_id"]) == sae_ids  # pandas
        top = idx.features.filter(f"sae_id = '{sae_ids[0]}'").order("density DESC").limit(5).df()
        assert len(top) == 5 and list(top["density"]) == sorted(top["density"], reverse=True)
        assert idx.feature(sae_ids[0], 3) == page and idx.feature(sae_ids[0], 10**6) is None
        assert idx.sql("SELECT count(*) FROM samples").fetchall()[0][0] == len(idx.samples)
        assert idx.sql("SELECT count(*) FROM features WHERE sae_id = ?", [sae_ids[0]]).fetchall()[0][0] == n_first
        with pytest.raises(duckdb.Error):
            idx.sql("DELETE FROM features")  # read-only
        with pytest.raises(AttributeError, match="not a table"):
            idx.no_such_table  # noqa: B018


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(FormatError, match="no such index"):
        saescope.open_index(tmp_path / "missing.duckdb")
    (tmp_path / "junk.duckdb").write_bytes(b"not a database")
    with pytest.raises(FormatError, match="not a readable saescope index"):
        saescope.open_index(tmp_path / "junk.duckdb")
    with duckdb.connect(str(tmp_path / "other.duckdb")) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(FormatError, match="schema version None is not supported"):
        saescope.open_index(tmp_path / "other.duckdb")


def test_import_is_light(index_fpath):
    code = f"import sys, saescope; saescope.open_index({str(index_fpath)!r}).features.limit(1).fetchall(); " \
           "assert 'torch' not in sys.modules and 'fastapi' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)

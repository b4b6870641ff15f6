"""The dataset map coloured by one feature: the activation column equals the index's recorded
activations of that feature, in the map's row order."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from make_fixture_index import POOLED

from app.views.points import decode


def test_activation_column_matches_the_recorded_activations(client, index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    r = client.get(f"/sae/{POOLED}/feature/3/activations.bin")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    header, cols = decode(r.content)
    ids = [s for (s,) in con.execute("SELECT sample_id FROM sample_map WHERE sae_id = ? ORDER BY sample_id", [POOLED]).fetchall()]
    assert header["n"] == len(ids) and header["feature_id"] == 3
    want = {}
    for table in ("feature_top", "feature_quantiles", "sample_top"):
        for s, a in con.execute(f"SELECT sample_id, activation FROM {table} WHERE sae_id = ? AND feature_id = 3", [POOLED]).fetchall():
            want[s] = max(a, want.get(s, -np.inf))
    q = cols["act"]
    lo, hi = header["columns"][0]["min"], header["columns"][0]["max"]
    assert header["n_valued"] == len(want) and lo == pytest.approx(min(want.values())) and hi == pytest.approx(max(want.values()))
    for i, s in enumerate(ids):
        if s in want:
            assert q[i] == round((want[s] - lo) / (hi - lo) * 254) + 1
        else:
            assert q[i] == 0  # no value
    assert client.get(f"/sae/{POOLED}/feature/999/activations.bin").status_code == 404


def test_feature_page_links_to_where_it_fires(client):
    html = client.get(f"/sae/{POOLED}/feature/3").text
    assert f'href="/sae/{POOLED}?map=samples&amp;feature=3"' in html

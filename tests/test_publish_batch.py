"""publish_batch reads a chunk of pages in a few queries: every page must equal the server's own view."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "app"))

from make_fixture_index import PATCH, POOLED, TEXT, build_fixture_index  # noqa: E402

from app.db import Index  # noqa: E402
from app.views.common import get_sae  # noqa: E402
from app.views.feature_map import feature_activations as served_activations  # noqa: E402
from app.views.features import _feature_view  # noqa: E402
from app.views.samples import sample_view  # noqa: E402
from precompute.publish_batch import MapOrder, feature_activations, feature_views, sample_views  # noqa: E402


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    idx = Index(build_fixture_index(tmp_path_factory.mktemp("batch")))
    yield idx
    idx.close()


def _ids(db, sql, sae):
    return [int(r[0]) for r in db.cursor().execute(sql, [sae]).fetchall()]


@pytest.mark.parametrize("sae", [POOLED, PATCH, TEXT])
def test_batched_feature_pages_equal_the_served_ones(db, sae):
    ctx = get_sae(db, sae)
    fids = _ids(db, "SELECT feature_id FROM features WHERE sae_id = ? ORDER BY feature_id", sae)
    odd = fids[1::3]  # a subset with gaps, read as one id range and filtered
    for chunk in (fids[:7], fids[7:], odd):
        views = feature_views(db, ctx, chunk)
        assert sorted(views) == sorted(chunk)
        for fid in chunk:
            assert views[fid].model_dump_json() == _feature_view(db, ctx, fid).model_dump_json(), fid
    if ctx.summary.is_patch:  # the fixture's patch SAE has maps: the batch must have joined them
        assert any(t.heatmap for v in feature_views(db, ctx, fids).values() for t in v.top)


@pytest.mark.parametrize("sae", [POOLED, PATCH, TEXT])
def test_batched_sample_pages_equal_the_served_ones(db, sae):
    ctx = get_sae(db, sae)
    sids = _ids(db, "SELECT sample_id FROM sample_top WHERE sae_id = $1 UNION SELECT sample_id FROM sample_map "
                    "WHERE sae_id = $1 ORDER BY sample_id", sae)
    assert sids
    for chunk in (sids[:5], sids[5:], sids[::4]):
        views = sample_views(db, ctx, chunk)
        for sid in chunk:
            assert views[sid].model_dump_json() == sample_view(db, ctx, sid).model_dump_json(), sid
    if ctx.summary.is_patch:
        assert any(f.heatmap for v in sample_views(db, ctx, sids).values() for f in v.features)


@pytest.mark.parametrize("sae", [POOLED, PATCH])
def test_batched_map_columns_are_the_served_bytes(db, sae):
    fids = _ids(db, "SELECT feature_id FROM features WHERE sae_id = ? ORDER BY feature_id", sae)
    order = MapOrder.load(db, sae)
    assert len(order.sample_ids)
    for chunk in (fids[:10], fids[10:], fids[::5]):
        got = feature_activations(db, sae, order, chunk)
        for fid in chunk:
            assert got[fid] == served_activations(db, sae, fid), fid


def test_a_feature_without_its_page_document_is_named(tmp_path):
    import duckdb

    from sae_core.errors import DataError

    path = build_fixture_index(tmp_path)
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM feature_page WHERE sae_id = ? AND feature_id = 7", [POOLED])
    con.close()
    idx = Index(path)
    try:
        with pytest.raises(DataError, match=r"feature 7 of SAE 'pooled-img' has no feature_page row; rebuild"):
            feature_views(idx, get_sae(idx, POOLED), list(range(16)))
    finally:
        idx.close()

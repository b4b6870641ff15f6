"""Search precision on the demo (issue #13): searching a label word puts first a feature whose
own top samples mostly carry that word.

The words come from the data, not from this file. Rule: every word of the demo's labels (cut as
search cuts text, app.search_text.words) that is on at least MIN_SAMPLES samples' labels and on at
most half of all samples (a word on most samples would pass whatever ranks first). For each word
and each SAE, the first result of `search.json?q=word` is the feature; its top samples (ranks <
n, n = the number of samples carrying the word, at most TOP; fewer when the feature fires on fewer)
are read from `feature_top`; more than half of them must carry the word in their label or caption.
"""

from __future__ import annotations

from collections import defaultdict

import duckdb
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.search_text import STOP_WORDS, words
from app.settings import Settings

MIN_SAMPLES = 5
TOP = 10
PRECISION = 0.5


def _label_words(con) -> tuple[dict[str, set[int]], dict[int, set[str]], int]:
    """(word -> samples whose label holds it, sample -> words of its caption and label, n samples)."""
    rows = con.execute("SELECT sample_id, label, caption FROM samples").fetchall()
    by_word: dict[str, set[int]] = defaultdict(set)
    carried: dict[int, set[str]] = {}
    for sid, label, caption in rows:
        for w in words(label):
            by_word[w].add(sid)
        carried[sid] = set(words(label)) | set(words(caption))
    chosen = {w: s for w, s in by_word.items()
              if MIN_SAMPLES <= len(s) <= len(rows) / 2 and w not in STOP_WORDS and not w.isdigit()}
    return chosen, carried, len(rows)


@pytest.fixture(scope="module")
def demo(small_demo):
    _, index = small_demo
    con = duckdb.connect(str(index), read_only=True)
    with TestClient(create_app(Settings(index=index))) as client:
        yield con, client
    con.close()


def test_first_result_for_a_label_word_mostly_fires_on_that_word(demo):
    con, client = demo
    chosen, carried, _ = _label_words(con)
    assert len(chosen) >= 3, f"the demo's labels give too few words to test: {sorted(chosen)}"
    report, failures = [], []
    for (sae_id,) in con.execute("SELECT sae_id FROM saes ORDER BY sae_id").fetchall():
        for word, holders in sorted(chosen.items()):
            hits = client.get(f"/sae/{sae_id}/search.json", params={"q": word}).json()["data"]
            assert hits, f"{sae_id}: nothing found for label word {word!r} on {len(holders)} samples"
            fid = hits[0]["feature_id"]
            n = min(TOP, len(holders))
            top = [r[0] for r in con.execute("SELECT sample_id FROM feature_top WHERE sae_id = ? AND feature_id = ? "
                                             "ORDER BY rank LIMIT ?", [sae_id, fid, n]).fetchall()]
            share = sum(word in carried[s] for s in top) / len(top)
            report.append(f"{sae_id} {word!r} -> #{fid}: {share:.0%} of its top {len(top)}")
            if share <= PRECISION:
                failures.append(report[-1])
    print("\n".join(report))
    assert not failures, "first results whose top samples mostly lack the word:\n" + "\n".join(failures)

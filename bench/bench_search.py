"""Search benchmark: server-side latency of feature search on a CC3M-sized synthetic dataset.

    python bench/bench_search.py                      # 3M captions, 65,536 features x 64 top
    python bench/bench_search.py --samples 300000 --features 8192 --repeats 5   # quick

Builds an index whose captions are drawn from a Zipf-like vocabulary of ~2,600 words ("a photo
of a small red dog on the beach"-shaped, some plural, some possessive), feature names from the
same words, and top samples spread over the whole dataset; then builds `search_terms` exactly as
`saescope index` does (precompute.search_index) and times `search_view` (what a search request
runs, rendering aside) for common, mid and rare words, plurals, several words, a quoted phrase,
a prefix and filters. Prints the build time, table sizes and a p50/p99 table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))
from make_fixture_index import create_schema  # noqa: E402

from app.db import Index  # noqa: E402
from app.views.common import get_sae  # noqa: E402
from app.views.search import Filters, search_view  # noqa: E402
from precompute.index_schema import finalize  # noqa: E402
from sae_core.contract import SCHEMA_VERSION  # noqa: E402

SAE = "bench"
ADJ = ("small large red green blue yellow black white old young wooden metal bright dark happy sleepy tall short "
       "striped spotted shiny plastic glass paper").split()
PLACES = "beach street kitchen forest table park room field river city snow grass road garden wall sky".split()
SYL = "ka to ri mo na se lu pe di vo ga ne bi ru so".split()


def nouns(n: int) -> list[str]:
    """n distinct pronounceable words (real-looking, no real-word collisions needed)."""
    out = []
    for i in range(n):
        w, j = "", i + 15
        while j:
            w += SYL[j % len(SYL)]
            j //= len(SYL)
        out.append(w + "x")
    return out


def build(path: Path, n_samples: int, n_features: int, n_top: int, n_nouns: int) -> None:
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    create_schema(con)
    con.execute("INSERT INTO schema_version VALUES (?, 'bench', now()::TIMESTAMP)", [SCHEMA_VERSION])
    con.execute("INSERT INTO index_meta VALUES ('inputs_hash', 'bench-search')")
    con.execute("INSERT INTO datasets VALUES ('ds', 'image', 'synthetic', ?, 'thumbs', true)", [n_samples])  # an image dataset
    con.execute("CREATE TEMP TABLE vocab AS SELECT ?::VARCHAR[] AS nouns, ?::VARCHAR[] AS adj, ?::VARCHAR[] AS places",
                [nouns(n_nouns), ADJ, PLACES])
    # Zipf-like noun choice: index ~ n^(u^2) concentrates on the first nouns
    con.execute("CREATE TEMP MACRO h(x, n) AS (hash(x) % n)::BIGINT")  # deterministic pseudo-random pick in [0, n)
    pick = "nouns[least({n}, floor(pow({n}, (h(i * {s}, 10000) / 10000.0) ** 2))::BIGINT)]"
    noun1, noun2 = pick.format(n=n_nouns, s=7), pick.format(n=n_nouns, s=13)
    con.execute(f"""INSERT INTO samples SELECT 'ds', i, 'img/' || i || '.jpg',
        'a photo of a ' || adj[1 + h(i * 3, {len(ADJ)})] || ' ' || {noun1}
        || CASE WHEN hash(i * 5) % 3 = 0 THEN 's' WHEN hash(i * 5) % 7 = 1 THEN '''s ' || {noun2} ELSE '' END
        || ' on the ' || places[1 + h(i * 11, {len(PLACES)})], NULL, 256, 256
        FROM range(?) t(i), vocab""", [n_samples])
    con.execute("INSERT INTO saes VALUES (?, ?, 'ds', 'synthetic', 'blocks.0', 'pooled', 'topk', 1024, ?, 32, "
                "NULL, NULL, ?, ?, 32, 0.8, 0.2, 0.01, 'x', 'y', '{}')", [SAE, SAE, n_features, n_samples, n_samples])
    con.execute(f"""INSERT INTO features (sae_id, feature_id, name, density, n_fired, mean_act, max_act, label_entropy,
        top_label, cluster_id, x, y, name_score) SELECT ?, i,
        CASE WHEN i % 5 < 3 THEN nouns[1 + h(i, {n_nouns})] || ', ' || adj[1 + h(i * 3, {len(ADJ)})] END,
        (hash(i) % 10000 + 1) / 1e6, hash(i) % 1000, 1.0, 10.0, 1.0, NULL, (i % 50)::INT, 0, 0,
        (hash(i * 17) % 100) / 100.0 FROM range(?) t(i), vocab""", [SAE, n_features])
    con.execute("INSERT INTO feature_top SELECT ?, f, r, hash(f * 7919 + r) % ?, CAST(10.0 - r * 0.1 AS REAL), NULL, NULL "
                "FROM range(?) a(f), range(?) b(r) ORDER BY f, r", [SAE, n_samples, n_features, n_top])
    t0 = time.perf_counter()
    finalize(con)  # feature_page (search hits show their first top samples from it), then search_terms
    print(f"derived tables built in {time.perf_counter() - t0:.1f} s; search_terms: "
          f"{con.execute('SELECT count(*) FROM search_terms').fetchone()[0]:,} rows")
    con.execute("CHECKPOINT")
    con.close()


def queries(n_nouns: int) -> list[tuple[str, str, Filters | None]]:
    ns = nouns(n_nouns)
    return [("common word", "photo", None), ("frequent noun", ns[0], None), ("mid noun", ns[40], None),
            ("rare noun", ns[-5], None), ("plural", ns[3] + "s", None), ("two words", f"red {ns[2]}", None),
            ("three words + stop", f"the {ns[5]} on the beach", None), ("phrase", f'"red {ns[1]}"', None),
            ("prefix", ns[7][:4], None), ("filters", ns[2], Filters(min_density=0.001, cluster=3, sort="density")),
            ("page 5", ns[0], None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3_000_000)
    ap.add_argument("--features", type=int, default=65_536)
    ap.add_argument("--top", type=int, default=64)
    ap.add_argument("--nouns", type=int, default=2_500)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--index", type=Path, default=None, help="reuse/build the index here")
    args = ap.parse_args()
    path = args.index or Path(tempfile.mkdtemp()) / "search.duckdb"
    if not path.exists():
        t0 = time.perf_counter()
        build(path, args.samples, args.features, args.top, args.nouns)
        print(f"built {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    db = Index(path)
    db.cached = lambda key, make: make()  # time the search itself, not the app's cache of repeated searches
    ctx = get_sae(db, SAE)
    print(f"\n{args.samples:,} captions, {args.features:,} features x {args.top} top; "
          f"server-side search_view, {args.repeats} runs each (first run not counted); ms")
    print(f"{'query':<20}{'q':<32}{'hits':>8}{'p50':>8}{'p99':>8}{'cpu p50':>9}")
    all_ms: list[float] = []
    all_cpu: list[float] = []
    for label, q, filters in queries(args.nouns):
        page = 5 if label == "page 5" else 1
        view = search_view(db, ctx, q, page, 24, filters)  # warm
        ms, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            search_view(db, ctx, q, page, 24, filters)
            ms.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        all_ms += ms
        all_cpu += cpu
        p99 = statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else ms[0]
        print(f"{label:<20}{q[:30]:<32}{view.count:>8,}{statistics.median(ms):>8.1f}{p99:>8.1f}{statistics.median(cpu):>9.1f}")
    print(f"{'all':<52}{statistics.median(all_ms):>8.1f}{statistics.quantiles(all_ms, n=100)[98]:>8.1f}"
          f"{statistics.median(all_cpu):>9.1f}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(cpu = CPU time of the process, all threads: the work without waiting for a core)")
    db.close()


if __name__ == "__main__":
    main()

"""Build a small but complete explorer index for the app tests.

Tables come from `precompute.index_schema` (`create_tables`, then `finalize` for the derived
tables), so the app is tested against exactly what `precompute index` writes. Run as a script to build one
by hand: `python tests/app/make_fixture_index.py /tmp/fixture`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from precompute.index_schema import create_tables, finalize  # noqa: E402
from sae_core.contract import SCHEMA_VERSION  # noqa: E402

N_SAMPLES = 40
N_FEATURES = 64
N_TOP = 8
LABELS = ["circle", "square", "triangle", "star"]
COLORS = ["red", "green", "blue", "gold"]
XSS = "<script>alert(1)</script>"
POOLED, PATCH, TEXT = "pooled-img", "patch-img", "text-sae"
IMG_DS, TEXT_DS = "shapes-0123456789ab", "words-0123456789ab"
DEAD_FEATURE = 63  # never fires: no top rows, density 0


QUANTILE_BINS = 4


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every contract table, empty, exactly as the index builder does."""
    create_tables(con)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """Multi-row INSERTs in chunks: far faster than executemany in DuckDB."""
    if not rows:
        return
    one = "(" + ",".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), 400):
        chunk = rows[i:i + 400]
        con.execute(f"INSERT INTO {table} VALUES " + ",".join([one] * len(chunk)),
                    [v for row in chunk for v in row])


def caption_of(i: int) -> str:
    """Sample 7 carries an XSS payload so every page is checked for escaping."""
    if i == 7:
        return f"a {XSS} shape"
    return f"a {COLORS[i % 4]} {LABELS[(i // 4) % 4]} number {i}"


def _draw_thumbs(dpath: Path) -> None:
    dpath.mkdir(parents=True, exist_ok=True)
    for i in range(N_SAMPLES):
        img = Image.new("RGB", (64, 48), "white")
        d = ImageDraw.Draw(img)
        c, shape = COLORS[i % 4], LABELS[(i // 4) % 4]
        box = (8 + i % 5, 6, 56 - i % 7, 42)
        if shape == "circle":
            d.ellipse(box, fill=c)
        elif shape == "square":
            d.rectangle(box, fill=c)
        else:
            d.polygon([(32, 4), (8, 44), (56, 44)], fill=c)
        img.save(dpath / f"{i}.webp", "WEBP", quality=80)


def _sample_rows() -> list[tuple]:
    rows = [(IMG_DS, i, f"img/{i}.png", caption_of(i), LABELS[(i // 4) % 4], 64, 48)
            for i in range(N_SAMPLES)]
    words = ["apple pie recipe", "red apple orchard", "blue ocean waves", "green forest walk",
             f"text with {XSS}", "stormy ocean night", "apple tree blossom", "forest cabin"]
    rows += [(TEXT_DS, i, f"words#{i}", w, None, None, None) for i, w in enumerate(words)]
    return rows


def _heat(rng: np.random.Generator, act: float, grid: int | None) -> tuple[bytes | None, float | None]:
    """A uint8 patch map whose maximum decodes to `act` (value * scale / 255)."""
    if grid is None:
        return None, None
    h = rng.integers(0, 200, size=grid * grid).astype(np.uint8)
    h[int(rng.integers(0, grid * grid))] = 255
    return h.tobytes(), float(act)


def _feature_tables(con, sae_id: str, d_sae: int, n_samples: int, grid: int | None, seed: int,
                    labels: list[str | None]) -> None:
    """Write features and every per-feature table for one SAE, consistent with each other."""
    rng = np.random.default_rng(seed)
    n_clusters = 4
    feats, tops, quants, hists, labs, neigh, stop = [], [], [], [], [], [], {}
    n_top = min(N_TOP, n_samples)
    for f in range(d_sae):
        cluster = -1 if f % 9 == 8 else f % n_clusters
        cx, cy = math.cos(cluster * 1.57) * 5, math.sin(cluster * 1.57) * 5
        x, y = cx + rng.normal(0, 1), cy + rng.normal(0, 1)
        if f == DEAD_FEATURE:
            feats.append((sae_id, f, None, 0.0, 0, 0.0, 0.0, 0.0, None, -1, float(x), float(y), 0.0, 0.0))
            hists.append((sae_id, f, [], []))
            continue
        samples = rng.permutation(n_samples)[:n_top]
        acts = np.sort(rng.uniform(0.5, 5.0, n_top))[::-1] * (1 + f / 10)
        # ties broken by smaller sample_id: make the order contract-correct explicitly
        order = sorted(zip(acts.tolist(), samples.tolist(), strict=True), key=lambda t: (-round(t[0], 6), t[1]))
        top_labels = [labels[s] for _, s in order if labels[s] is not None]
        for r, (a, s) in enumerate(order):
            hb, hs = _heat(rng, a, grid)
            tops.append((sae_id, f, r, s, a, hb, hs))
            stop.setdefault(s, []).append((a, f))
        for b in range(3):
            for r in range(2):
                s = int(rng.integers(0, n_samples))
                a = float(0.2 + b + r * 0.1)
                hb, hs = _heat(rng, a, grid)
                quants.append((sae_id, f, b, r, s, a, hb, hs))
        edges = np.logspace(-2, math.log10(order[0][0]), 11).tolist()
        hists.append((sae_id, f, edges, rng.integers(0, 50, 10).tolist()))
        counts: dict[str, int] = {}
        for lab in top_labels:
            counts[lab] = counts.get(lab, 0) + 1
        ent = 0.0
        for lab, c in sorted(counts.items(), key=lambda t: (-t[1], t[0])):
            frac = c / len(top_labels)
            ent -= frac * math.log(frac)
            labs.append((sae_id, f, lab, c, frac))
        top_label = max(counts, key=lambda k: (counts[k], k)) if counts else None
        ent = ent if top_labels else None  # as the index writes it: no labelled top samples, no entropy
        name = f"{top_label or 'word'} detector {f}"
        if f == 5:
            name = f"evil {XSS} feature"
        n_fired = int(rng.integers(n_top, n_samples + 1))
        feats.append((sae_id, f, name, n_fired / n_samples, n_fired, float(np.mean(acts)),
                      float(order[0][0]), ent, top_label, cluster, float(x), float(y), 0.9 - (f % 7) / 10, 0.5))
        for r in range(10):
            nb = (f + r + 1) % (d_sae - 1)
            neigh.append((sae_id, f, r, nb, float(0.9 - r * 0.05)))
    _insert(con, "features", feats)
    _insert(con, "feature_top", tops)
    _insert(con, "feature_quantiles", quants)
    _insert(con, "feature_hist", hists)
    _insert(con, "feature_labels", labs)
    _insert(con, "feature_neighbors", neigh)
    _insert(con, "feature_coactivation", _coactivation_rows(sae_id, tops))
    concepts = [(sae_id, f, kind, r, f"class {(f + r) % 7}" if kind == "promotes" else f"other {r}",
                 (3.0 - r) * (1 if kind == "promotes" else -1), "decoder" if grid is None else "ablation")
                for f in range(d_sae) if f != DEAD_FEATURE and f % 4 == 0 for kind in ("promotes", "suppresses") for r in range(3)]
    _insert(con, "feature_concepts", concepts)
    if grid is not None:  # the patch SAE's layer has 12 neurons; features 0-5 and 60-62 sit in a low-density cluster
        cos = [[round(math.cos(f + j) * 127) for j in range(12)] for f in range(d_sae)]
        _insert(con, "feature_alignment", [(sae_id, f, max(c) / 127, c.index(max(c)), sum(x / 127 > 0.5 for x in c),
                                             bytes(x & 0xFF for x in c)) for f, c in enumerate(cos)])
        _insert(con, "sae_alignment", [(sae_id, 12, 0.5, [0.3 + 0.001 * i for i in range(100)])])
        _insert(con, "low_density_cluster", [(sae_id, [0, 1, 2, 3, 4, 5, 60, 61, 62], 2.5, 0.97)])
    rows = []
    for s in range(n_samples):
        for r, (a, f) in enumerate(sorted(stop.get(s, []), key=lambda t: -t[0])[:5]):
            rows.append((sae_id, s, r, f, a))
    _insert(con, "sample_top", rows)
    cl = [(sae_id, "features", c, f"cluster {c} of {sae_id}", 0, math.cos(c * 1.57) * 5,
           math.sin(c * 1.57) * 5, 0.6) for c in range(n_clusters)]
    cl.append((sae_id, "samples", 0, "all samples", n_samples, 0.0, 0.0, 0.6))
    _insert(con, "clusters", cl)
    smap = [(sae_id, s, float(rng.normal()), float(rng.normal()), 0) for s in range(n_samples)]
    _insert(con, "sample_map", smap)
    curve = [(sae_id, st * 100, st * 100 * 256, 1.0 / (st + 1), 0.5 / (st + 1) + 0.1,
              32 - st * 0.5, 0.5 / (st + 1)) for st in range(20)]
    _insert(con, "training_curve", curve)


def _coactivation_rows(sae_id: str, tops: list[tuple]) -> list[tuple]:
    """Co-activation neighbours by the Jaccard index of the fixture's top-sample sets, 3 per feature."""
    sets: dict[int, set[int]] = {}
    for _, f, _, s, *_ in tops:
        sets.setdefault(f, set()).add(s)
    rows = []
    for f, a in sets.items():
        scored = sorted(((len(a & b) / len(a | b), g, len(a & b)) for g, b in sets.items() if g != f and len(a & b) >= 2),
                        key=lambda t: (-t[0], t[1]))
        rows += [(sae_id, f, r, g, j, n) for r, (j, g, n) in enumerate(scored[:3])]
    return rows


def build_fixture_index(dpath: Path, schema_version: int = SCHEMA_VERSION) -> Path:
    """Write `dpath/fixture.duckdb` and `dpath/thumbs/`; returns the index path."""
    dpath.mkdir(parents=True, exist_ok=True)
    thumbs = dpath / "thumbs"
    _draw_thumbs(thumbs)
    path = dpath / "fixture.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    create_schema(con)
    con.execute("INSERT INTO schema_version VALUES (?, '0.1.0', now()::TIMESTAMP)", [schema_version])
    con.execute(f"INSERT INTO index_meta VALUES ('quantile_bins', '{QUANTILE_BINS}'), "  # bin 3 is left empty
                "('inputs_hash', 'fixture-inputs')")
    _insert(con, "datasets", [
        (IMG_DS, "image", "shapes", N_SAMPLES, str(thumbs), True),
        (TEXT_DS, "text", "words", 8, None, False),
    ])
    _insert(con, "samples", _sample_rows())
    cfg = json.dumps({"arch": "topk", "k": 8})
    cfg_heldout = json.dumps({"sae": {"arch": "topk", "k": 8}, "heldout_metrics": {
        "explained_variance": 0.47, "fvu": 0.53, "l0": 8.0, "heldout_never_fired": 0.62, "n_tokens": 68, "dead_fraction": 0.0}})
    _insert(con, "saes", [
        (POOLED, "Shapes pooled <b>", IMG_DS, "efficientnet-lite0", "head", "pooled", "topk", 1280,
         N_FEATURES, 8, None, None, N_SAMPLES, N_SAMPLES, 7.9, 0.83, 0.17, 1 / 64, "ckpt/a", "st/a", cfg_heldout),
        (PATCH, "Shapes patches", IMG_DS, "efficientnet-lite0", "blocks.15", "patches", "relu", 320,
         N_FEATURES, None, 4, 4, N_SAMPLES, N_SAMPLES * 16, 12.5, 0.71, 0.29, 1 / 64, "ckpt/b", "st/b", cfg),
        (TEXT, "Words", TEXT_DS, "minilm", "pooled", "pooled", "topk", 384, 16, 4, None, None, 8, 8,
         3.9, 0.6, 0.4, 1 / 16, "ckpt/c", "st/c", cfg),
    ])
    img_labels = [LABELS[(i // 4) % 4] for i in range(N_SAMPLES)]
    _feature_tables(con, POOLED, N_FEATURES, N_SAMPLES, None, 1, img_labels)
    _feature_tables(con, PATCH, N_FEATURES, N_SAMPLES, 4, 2, img_labels)
    _feature_tables(con, TEXT, 16, 8, None, 3, [None] * 8)
    # contract: per-feature tables stored ordered by (sae_id, feature_id, ...)
    for table, order in [("features", "sae_id, feature_id"),
                         ("feature_top", "sae_id, feature_id, rank"),
                         ("feature_quantiles", "sae_id, feature_id, bin, rank"),
                         ("feature_neighbors", "sae_id, feature_id, rank")]:
        con.execute(f"CREATE TABLE _t AS SELECT * FROM {table} ORDER BY {order}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE _t RENAME TO {table}")
    finalize(con)  # derived tables, as the index builder does last
    con.close()
    return path


if __name__ == "__main__":
    print(build_fixture_index(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/saescope-fixture")))

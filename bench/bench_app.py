"""Explorer benchmark: a large synthetic index, feature page latency under load, map payload sizes.

    python bench/bench_app.py                       # 65,536 features x 64 top, 1M samples
    python bench/bench_app.py --features 4096 --samples 100000 --requests 500   # quick

Builds the index with DuckDB SQL (seconds), serves it with a real uvicorn in a subprocess,
hits random feature pages (HTML and .json) with `--concurrency` clients and prints p50/p99 and
req/s, then the binary map payload sizes (65k features, 1M features, 1M samples) and, when
/usr/bin/chromium exists, the time to load and draw the 1M-point map in headless Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "app"))
from make_fixture_index import create_schema  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from lean_http import CpuMeter, LeanConnection  # noqa: E402

from precompute.index_schema import finalize  # noqa: E402
from sae_core.contract import SCHEMA_VERSION  # noqa: E402

SAE, BIG = "bench", "bench-1m"


def build_index(path: Path, n_features: int, n_top: int, n_samples: int, n_big: int) -> None:
    """Synthetic but contract-shaped rows; per-feature tables written in (sae_id, feature_id) order."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    create_schema(con)
    h = "hash(feature_id * 7919 + r)"  # cheap deterministic pseudo-randomness
    con.execute("INSERT INTO schema_version VALUES (?, 'bench', now()::TIMESTAMP)", [SCHEMA_VERSION])
    con.execute("INSERT INTO datasets VALUES ('bench-ds', 'image', 'synthetic', ?, 'thumbs', true)", [n_samples])
    con.execute("INSERT INTO samples SELECT 'bench-ds', i, 'img/' || i || '.png', 'a photo of thing ' || (i % 997), "
                "'class' || (i % 100), 224, 224 FROM range(?) t(i)", [n_samples])
    for sid, d in [(SAE, n_features), (BIG, n_big)]:
        con.execute("INSERT INTO saes VALUES (?, ?, 'bench-ds', 'synthetic', 'blocks.0', 'pooled', 'topk', 1024, ?, 32, "
                    "NULL, NULL, ?, ?, 32, 0.8, 0.2, 0.01, 'x', 'y', '{}')", [sid, sid, d, n_samples, n_samples])
        con.execute("INSERT INTO features (sae_id, feature_id, name, density, n_fired, mean_act, max_act, label_entropy, "
                    "top_label, cluster_id, x, y) SELECT ?, i, 'feature name ' || i, (hash(i) % 10000 + 1) / 1e6, hash(i) % 1000, "
                    "(hash(i * 3) % 1000) / 100.0, (hash(i * 5) % 1000) / 50.0, (hash(i * 7) % 400) / 100.0, "
                    "'class' || (i % 100), CAST(i % 50 AS INTEGER) - 1, "
                    "CAST((i % 50) * 3 + (hash(i * 11) % 1000) / 400.0 AS REAL), "
                    "CAST((i // 50 % 50) * 3 + (hash(i * 13) % 1000) / 400.0 AS REAL) FROM range(?) t(i)", [sid, d])
    con.execute(f"INSERT INTO feature_top SELECT ?, feature_id, r, {h} % ?, CAST(10.0 - r * 0.1 AS REAL), NULL, NULL "
                "FROM range(?) f(feature_id), range(?) k(r) ORDER BY feature_id, r", [SAE, n_samples, n_features, n_top])
    con.execute(f"INSERT INTO feature_quantiles SELECT ?, feature_id, r // 2, r % 2, {h} % ?, CAST(r AS REAL), NULL, NULL "
                "FROM range(?) f(feature_id), range(10) k(r) ORDER BY feature_id, r", [SAE, n_samples, n_features])
    con.execute("INSERT INTO feature_hist SELECT ?, i, [0.01, 0.1, 1.0, 10.0], [5, 20, 3] FROM range(?) t(i)", [SAE, n_features])
    con.execute("INSERT INTO feature_labels SELECT ?, i, 'class' || ((i + r) % 100), 10 - r, (10 - r) / 55.0 "
                "FROM range(?) t(i), range(5) k(r) ORDER BY i, r", [SAE, n_features])
    con.execute("INSERT INTO feature_neighbors SELECT ?, i, r, (i + r + 1) % ?, CAST(0.9 - r * 0.05 AS REAL) "
                "FROM range(?) t(i), range(10) k(r) ORDER BY i, r", [SAE, n_features, n_features])
    con.execute("INSERT INTO clusters (sae_id, map, cluster_id, name, size, x, y) SELECT ?, 'features', c, 'cluster ' || c, 100, c % 50 * 3, 0 FROM range(49) t(c)", [SAE])
    con.execute("INSERT INTO sample_map SELECT ?, i, CAST((hash(i) % 100000) / 1000.0 AS REAL), "
                "CAST((hash(i * 3) % 100000) / 1000.0 AS REAL), CAST(i % 20 AS INTEGER) FROM range(?) t(i)", [SAE, n_samples])
    con.execute("INSERT INTO sample_top SELECT ?, i, r, CAST(hash(i * 5 + r) % ? AS INTEGER), CAST(5.0 - r AS REAL) "
                "FROM range(?) t(i), range(3) k(r) ORDER BY i, r", [SAE, n_features, n_samples])
    con.execute("INSERT INTO training_curve SELECT ?, s * 100, s * 100 * 4096, 1.0 / (s + 1), 0.3, 32, 0.01 FROM range(100) t(s)", [SAE])
    finalize(con)
    con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def index_for(src: Path, index: Path) -> Path:
    """`index`, or a copy whose schema_version row says what the app in `src` reads: a reference
    tree from before a schema bump refuses the new version number, though the rows it reads are the same."""
    want = int(re.search(r"^SCHEMA_VERSION = (\d+)", (src / "app" / "db.py").read_text(), re.M).group(1))
    with duckdb.connect(str(index), read_only=True) as con:
        have = con.execute("SELECT version FROM schema_version").fetchone()[0]
    if have == want:
        return index
    copy = index.with_name(f"{index.stem}.v{want}.duckdb")
    if not copy.exists():
        tmp = copy.with_suffix(".tmp")
        shutil.copyfile(index, tmp)
        with duckdb.connect(str(tmp)) as con:
            con.execute("UPDATE schema_version SET version = ?", [want])
        tmp.rename(copy)
    return copy


def start_server(index: Path, workers: int, src: Path = REPO) -> tuple[subprocess.Popen, str]:
    """uvicorn in a subprocess, serving the app found in `src` (this checkout, or a reference tree)."""
    port = free_port()
    code = f"from app.main import serve; serve({str(index)!r}, port={port}, workers={workers})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(src)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a busy machine starts workers slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(base: str, urls: list[str], concurrency: int) -> tuple[list[float], list[float], float, int]:
    """Client-side latencies, server-side ones (the app's Server-Timing header), wall time, errors."""
    by_kind, wall = await load_kinds(base, [("all", u) for u in urls], concurrency)
    lat, server, errors = by_kind["all"]
    return lat, server, wall, errors


async def load_kinds(base: str, jobs: list[tuple[str, str]], concurrency: int, client: str = "lean") -> tuple[dict, float]:
    """Run (kind, url) jobs with `concurrency` clients; per kind: client ms, server ms, errors.

    client "lean" (bench/lean_http.py, one keep-alive connection per user, ~0.3 ms CPU a request)
    or "httpx" (the AsyncClient the earlier figures used; ~7 ms CPU a request at 50 connections)."""
    out: dict[str, tuple[list[float], list[float], int]] = {}
    queue = list(jobs)

    async def fetch(conn, url: str) -> tuple[bool, str]:
        if client == "httpx":
            r = await conn.get(url)
            return r.status_code == 200, r.headers.get("server-timing", "")
        status, headers, _ = await conn.get(url)
        return status == 200, headers.get(b"server-timing", b"").decode()

    async def worker(conn) -> None:
        while queue:
            kind, url = queue.pop()
            lat, server, errors = out.setdefault(kind, ([], [], 0))
            t0 = time.perf_counter()
            try:
                ok, timing = await fetch(conn, url)
            except (httpx.TransportError, OSError, asyncio.IncompleteReadError, ValueError):
                ok, timing = False, ""
            lat.append((time.perf_counter() - t0) * 1000)
            if not ok:
                out[kind] = (lat, server, errors + 1)
            if "dur=" in timing:
                server.append(float(timing.split("dur=")[1].split(",")[0]))

    t0 = time.perf_counter()
    if client == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as hc:
            await asyncio.gather(*(worker(hc) for _ in range(concurrency)))
    else:
        conns = [LeanConnection(base) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            for c in conns:
                c.close()
    return out, time.perf_counter() - t0


MIX = (("feature page", 0.30), ("feature JSON", 0.25), ("search", 0.15), ("thumbnail", 0.30))
"""The issue-14 load mix: shares of requests by kind."""
SEARCH_WORDS = ["thing", "photo of thing", "class7", "things 12", "name", "feature name 42", "\"photo of\"", "classes"]


def mix_jobs(rng: random.Random, n: int, n_features: int, n_thumbs: int, kinds=MIX) -> list[tuple[str, str]]:
    """n requests drawn from `kinds` by their shares."""
    def url(kind: str) -> str:
        if kind == "feature page":
            return f"/sae/{SAE}/feature/{rng.randrange(n_features)}"
        if kind == "feature JSON":
            return f"/sae/{SAE}/feature/{rng.randrange(n_features)}.json"
        if kind == "search":
            return f"/sae/{SAE}/search?{urlencode({'q': rng.choice(SEARCH_WORDS), 'page': rng.randint(1, 3)})}"
        return f"/thumb/bench-ds/{rng.randrange(n_thumbs)}.webp"
    names, weights = zip(*kinds, strict=True)
    return [(k, url(k)) for k in rng.choices(names, weights, k=n)]


def write_thumbs(dpath: Path, n: int) -> None:
    """n small WebP tiles (~1-2 KB, like 64 px thumbnails) named <sample_id>.webp."""
    from PIL import Image

    dpath.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (dpath / f"{i}.webp").exists():
            Image.new("RGB", (64, 64), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(dpath / f"{i}.webp")


def run_mix(servers: dict[str, tuple[subprocess.Popen, str]], args) -> None:
    """Thumbnails alone, then the 4-kind mix, with `--mix-clients` users, per server and client;
    servers are interleaved `--repeats` times so a shared machine's load falls on all alike.
    CPU columns: ms of CPU per request in the load client and in the server's processes."""
    rows = []
    for rep in range(args.repeats):
        for name, (proc, base) in servers.items():
            for client in args.client:
                rng = random.Random(rep)
                for label, kinds in [("thumbnails alone", (("thumbnail", 1.0),)), ("mix", MIX)]:
                    asyncio.run(load_kinds(base, mix_jobs(rng, 200, args.features, args.thumbs, kinds), 8, client))  # warm up
                    jobs = mix_jobs(rng, args.requests, args.features, args.thumbs, kinds)
                    with CpuMeter(proc.pid) as cpu:
                        out, wall = asyncio.run(load_kinds(base, jobs, args.mix_clients, client))
                    rows += mix_rows(f"{name}/{client}", label, out, wall, cpu)
    print(f"\n{args.mix_clients} clients, {args.workers} worker(s), {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; ms")
    print(f"{'server/client':<16}{'run':<18}{'kind':<14}{'n':>6}{'errors':>7}{'client p50':>11}{'p99':>8}{'server p50':>11}"
          f"{'p99':>8}{'req/s':>8}{'cpu client':>11}{'server':>8}")
    for row in rows:
        print("{:<16}{:<18}{:<14}{:>6}{:>7}{:>11.1f}{:>8.1f}{:>11.1f}{:>8.1f}{:>8.0f}{:>11}{:>8}".format(*row))


def mix_rows(name: str, label: str, out: dict, wall: float, cpu: CpuMeter) -> list[tuple]:
    """One row per kind, plus 'all' with the CPU per request of both sides."""
    rows = [(name, label, kind, len(lat), errors, pct(lat, 50), pct(lat, 99), pct(server, 50), pct(server, 99),
             len(lat) / wall, "", "") for kind, (lat, server, errors) in sorted(out.items())]
    everything = [x for lat, _, _ in out.values() for x in lat]
    n, nan = len(everything), float("nan")
    rows.append((name, label, "all", n, sum(e for _, _, e in out.values()), pct(everything, 50), pct(everything, 99),
                 nan, nan, n / wall, f"{cpu.client_s * 1000 / n:.2f}", f"{cpu.server_s * 1000 / n:.2f}"))
    return rows


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def browser_map_time(base: str) -> float | None:
    if not Path("/usr/bin/chromium").exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        pg = b.new_page(viewport={"width": 1200, "height": 800})
        pg.goto(f"{base}/sae/{BIG}")
        pg.wait_for_selector("#explorer[data-ready='features']", timeout=60000)
        ms = float(pg.eval_on_selector("#explorer", "e => e.dataset.loadMs"))
        b.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=65_536)
    ap.add_argument("--top", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--big-map", type=int, default=1_000_000, help="features in the second SAE (map payload only)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[4, 16],
                    help="concurrent clients; a comma-separated list runs the load once per value")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--index", type=Path, default=None, help="reuse/build the index here")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--mix", action="store_true", help="only the issue-14 mix: thumbnails alone, then pages/JSON/search/thumbnails")
    ap.add_argument("--mix-clients", type=int, default=50)
    ap.add_argument("--thumbs", type=int, default=2000, help="thumbnail files written for the mix")
    ap.add_argument("--client", type=lambda v: v.split(","), default=["lean"],
                    help="load client(s) for --mix: lean (bench/lean_http.py), httpx, or both: lean,httpx")
    ap.add_argument("--reference", type=Path, default=None,
                    help="--mix also against the app in this tree, interleaved: e.g. `git archive HEAD~3 app templates "
                         "static | tar -x -C /tmp/ref`")
    ap.add_argument("--repeats", type=int, default=1, help="--mix rounds (each round runs every server once)")
    args = ap.parse_args()

    index = args.index or Path(tempfile.mkdtemp()) / "bench.duckdb"
    if not index.exists():
        t0 = time.perf_counter()
        build_index(index, args.features, args.top, args.samples, args.big_map)
        print(f"built {index} ({index.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    write_thumbs(index.parent / "thumbs", args.thumbs)
    if args.mix:
        servers = {"this": start_server(index_for(REPO, index), args.workers)}
        if args.reference:
            ref = args.reference.resolve()
            servers["reference"] = start_server(index_for(ref, index), args.workers, ref)
        try:
            run_mix(servers, args)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=10)
        return
    proc, base = start_server(index, args.workers)
    try:
        rows = []
        rng = random.Random(0)
        for conc in args.concurrency:
            for kind, suffix in [("feature page HTML", ""), ("feature JSON", ".json")]:
                urls = [f"/sae/{SAE}/feature/{rng.randrange(args.features)}{suffix}" for _ in range(args.requests)]
                asyncio.run(load(base, urls[:50], 4))  # warm up
                lat, server, wall, errors = asyncio.run(load(base, urls, conc))
                rows.append((kind, conc, len(lat), errors, pct(lat, 50), pct(lat, 99), pct(server, 50), pct(server, 99),
                             len(lat) / wall))
        print(f"\n{args.features:,} features x {args.top} top samples, {args.samples:,} samples, {args.workers} worker(s); "
              "client = seen by the load client, server = the app's Server-Timing")
        print(f"{'endpoint':<20}{'clients':>8}{'n':>7}{'errors':>7}{'client p50':>11}{'p99':>8}"
              f"{'server p50':>11}{'p99':>8}{'req/s':>8}")
        for kind, conc, n, err, p50, p99, s50, s99, rps in rows:
            print(f"{kind:<20}{conc:>8}{n:>7}{err:>7}{p50:>11.1f}{p99:>8.1f}{s50:>11.1f}{s99:>8.1f}{rps:>8.0f}")
        print(f"\n{'map payload':<32}{'points':>10}{'bytes':>12}{'MB':>8}")
        for label, url in [("features.bin", f"/sae/{SAE}/points/features.bin"),
                           ("features.bin (big SAE)", f"/sae/{BIG}/points/features.bin"),
                           ("samples.bin", f"/sae/{SAE}/points/samples.bin")]:
            t0 = time.perf_counter()
            r = httpx.get(base + url, timeout=120)
            n = int.from_bytes(r.content[:4], "little")
            import json
            pts = json.loads(r.content[4:4 + n])["n"]
            print(f"{label:<32}{pts:>10,}{len(r.content):>12,}{len(r.content) / 2**20:>8.2f}"
                  f"   (first request {time.perf_counter() - t0:.2f} s)")
        if not args.no_browser:
            ms = browser_map_time(base)
            if ms is not None:
                print(f"\nheadless Chromium: {args.big_map:,}-point map fetched, parsed and drawn in {ms:.0f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

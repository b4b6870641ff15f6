"""`saescope publish INDEX.duckdb OUT/`: the explorer as a static site any static host serves.

Every page the server renders is written at its URL path (`/sae/x/feature/3` -> `sae/x/feature/3/
index.html`), with its JSON twin, the map's point columns, the thumbnails it shows and the app's
static files; links are relative to a `<base>` at the site root (see publish_rewrite). What needs a
server runs in the browser (static/publish-search.js over publish_search's compact index).

Incremental: files are hashed and written only when they differ from the last publish's manifest,
and when the index, the options and the app's code are all unchanged nothing is rendered at all.
Feature and sample pages, the bulk of a site, render in worker processes.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from precompute.publish_batch import MapOrder, feature_activations, feature_views, sample_views
from precompute.publish_pages import PageSet, home_pages, sae_pages
from precompute.publish_render import Renderer, thumb_refs
from precompute.publish_rewrite import page_file, rewrite_css, rewrite_html, rewrite_js, rewrite_json
from precompute.publish_search import search_files
from precompute.publish_site import SiteWriter, read_site_manifest, write_if_changed
from precompute.publish_table import table_file
from sae_core.errors import ConfigError
from sae_core.progress import progress

REPO = Path(__file__).resolve().parent.parent
STATIC_DPATH = REPO / "static"
GITHUB_PAGES_LIMIT = 10**9  # "Published GitHub Pages sites may be no larger than 1 GB"
CHUNK = 256
MAX_FEATURE_MAP_SAMPLES = 20_000
"""Up to this many dataset-map samples, each feature gets its activations.bin (a byte per sample), so
'where does it fire' colours the map; above it, 65k features would add gigabytes."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class PublishConfig:
    index: Path = field(metadata=_help("explorer index (.duckdb) to publish"))
    out: Path = field(metadata=_help("site folder to write (created; re-publishing updates it in place)"))
    saes: tuple[str, ...] = field(default=(), metadata=_help("SAE ids to publish (default: all)"))
    features: tuple[int, ...] | None = field(default=None, metadata=_help("feature ids to publish per SAE (default: all)"))
    top_samples: int | None = field(default=None, metadata=_help("top samples shown per feature page (default: as served)"))
    thumb_size: int = field(default=0, metadata=_help("re-encode thumbnails to this longest side in px (0: copy as they are)"))
    thumb_quality: int = field(default=80, metadata=_help("WebP quality of re-encoded thumbnails (1-100)"))
    game_rounds: int = field(default=20, metadata=_help("precomputed rounds of the guessing game per SAE (0: no game)"))
    base_url: str | None = field(default=None, metadata=_help("absolute site URL for <base> (default: relative links)"))
    workers: int = field(default=0, metadata=_help("processes rendering feature and sample pages (0: one per core, at most 8)"))
    size_limit: int = field(default=GITHUB_PAGES_LIMIT, metadata=_help("warn above this many bytes (GitHub Pages: 1 GB)"))

    def __post_init__(self) -> None:
        if self.top_samples is not None and self.top_samples < 0:
            raise ConfigError("--top-samples: must be 0 or more")
        if not 0 <= self.thumb_size <= 4096 or not 1 <= self.thumb_quality <= 100:
            raise ConfigError("--thumb-size must be 0-4096 and --thumb-quality 1-100")
        if self.base_url and not self.base_url.startswith(("http://", "https://", "/")):
            raise ConfigError(f"--base-url {self.base_url!r}: give an absolute URL like https://me.github.io/site/")
        if self.game_rounds < 0:
            raise ConfigError("--game-rounds: must be 0 or more")


@dataclass
class PublishResult:
    out: Path
    n_files: int
    n_bytes: int
    written: list[str]
    removed: list[str]
    skipped: bool
    warnings: list[str]
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: wall time of the site-wide pages, the page rendering and the thumbnails;
    CPU time the workers spent on feature and on sample pages (where a publish's time goes)."""


def static_prefix() -> tuple[str, dict[str, bytes]]:
    """All static files in one content-addressed folder (map.js imports ./app.js beside it)."""
    files: dict[str, bytes] = {}
    for fpath in sorted(STATIC_DPATH.rglob("*")):
        if fpath.is_file():
            name = fpath.relative_to(STATIC_DPATH).as_posix()
            files[name] = fpath.read_bytes()
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in files.items())).hexdigest()[:12]
    prefix = f"static/{digest}/"
    out = {}
    for name, data in files.items():
        if name.endswith(".js"):
            data = rewrite_js(data.decode()).encode()
        elif name.endswith(".css"):
            data = rewrite_css(data.decode(), prefix).encode()
        out[prefix + name] = data
    return prefix, out


def inputs_key(cfg: PublishConfig, static_files: dict[str, bytes]) -> str:
    """Changes when anything that shapes the site does: the index file, the options, the app's code."""
    h = hashlib.sha256()
    st = cfg.index.stat()
    h.update(f"{cfg.index.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    opts = {k: str(v) for k, v in asdict(cfg).items() if k not in ("out", "workers", "index")}
    h.update(repr(sorted(opts.items())).encode())
    code = [*sorted((REPO / "app").rglob("*.py")), *sorted((REPO / "templates").rglob("*.html")),
            *sorted((REPO / "precompute").glob("publish*.py"))]
    for fpath in code:
        h.update(fpath.read_bytes())
    for name in sorted(static_files):
        h.update(name.encode())  # the folder name is the static files' content hash
    return h.hexdigest()[:24]


SECRET = "saescope-publish"  # game tokens are replaced by round numbers; the key only has to be fixed


@dataclass
class _Job:
    """What a worker needs: the index, where to write, the last manifest and the page options."""

    index: Path
    out: Path
    old: dict
    prefix: str
    base_url: str | None
    top_samples: int | None


_STATE: dict = {}


def _init_worker(job: _Job) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _STATE.clear()  # in-process publishes run back to back: nothing of the last index stays
    _STATE["job"], _STATE["r"] = job, Renderer(job.index, SECRET)


def _chunk_pages(r: Renderer, job: _Job, kind: str, sae_id: str, ids: list[int]) -> Iterator[dict[str, bytes]]:
    """Each page's files: feature data is read for the whole chunk at once (publish_batch)."""
    ctx = r.sae(sae_id)
    if kind == "sample":
        samples = sample_views(r.db, ctx, ids)
        for i in ids:
            url = f"/sae/{sae_id}/sample/{i}"
            html, twin = r.sample_files(ctx, samples[i])
            yield {page_file(url): rewrite_html(html.decode(), url, job.prefix, job.base_url).encode(),
                   f"sae/{sae_id}/sample/{i}.json": rewrite_json(twin.decode()).encode()}
        return
    views = feature_views(r.db, ctx, ids)
    acts = {}
    if kind == "feature+map":  # 'where does it fire': one byte per dataset-map sample
        order = _STATE.get(("map", sae_id)) or _STATE.setdefault(("map", sae_id), MapOrder.load(r.db, sae_id))
        acts = feature_activations(r.db, sae_id, order, ids)
    for i in ids:
        url = f"/sae/{sae_id}/feature/{i}"
        html, twin, card = r.feature_files(ctx, views[i], job.top_samples)
        files = {page_file(url): rewrite_html(html.decode(), url, job.prefix, job.base_url).encode(),
                 f"sae/{sae_id}/feature/{i}.json": rewrite_json(twin.decode()).encode(),
                 f"sae/{sae_id}/feature/{i}/card.json": rewrite_json(card.decode()).encode()}
        if i in acts:
            files[f"sae/{sae_id}/feature/{i}/activations.bin"] = acts[i]
        yield files


def _render_chunk(task: tuple[str, str, list[int]]) -> tuple[int, list[tuple], set, str, float]:
    """Render and write one chunk of feature or sample pages (in a worker or in-process)."""
    job, r = _STATE["job"], _STATE["r"]
    t0 = time.process_time()
    records, thumbs = [], set()
    for files in _chunk_pages(r, job, *task):
        for rel, data in files.items():
            if rel.endswith(".json") and not rel.endswith("card.json"):
                thumbs |= thumb_refs(data.decode())
            digest, wrote = write_if_changed(job.out, rel, data, job.old)
            records.append((rel, digest, len(data), wrote))
    return len(task[2]), records, thumbs, task[0].split("+")[0], time.process_time() - t0


def _n_workers(cfg: PublishConfig, n_tasks: int) -> int:
    n = cfg.workers or min(os.cpu_count() or 1, 8)
    return max(1, min(n, n_tasks))


def render_pages(cfg: PublishConfig, job: _Job, writer: SiteWriter, tasks: list[tuple[str, str, list[int]]],
                 stages: dict[str, float]) -> set:
    """Feature and sample pages, in worker processes when there are several cores and enough pages."""
    n_pages = sum(len(t[2]) for t in tasks)
    thumbs: set = set()
    bar = progress(total=n_pages, desc="publish pages", unit="page")
    n = _n_workers(cfg, len(tasks))
    if n == 1:
        _init_worker(job)
        results = map(_render_chunk, tasks)
    else:
        pool = mp.get_context("spawn").Pool(n, initializer=_init_worker, initargs=(job,))
        results = pool.imap_unordered(_render_chunk, tasks)
    ok = False
    try:
        for n_done, records, refs, kind, cpu_s in results:
            key = f"{kind} pages (CPU)"
            stages[key] = stages.get(key, 0.0) + cpu_s
            for rec in records:
                writer.record(*rec)
            thumbs |= refs
            bar.update(n_done)
        ok = True
    finally:
        bar.close()
        if n == 1:
            _STATE.pop("r").close()
        elif ok:
            pool.close()
            pool.join()
        else:  # a page failed: stop the workers now instead of rendering the rest first
            pool.terminate()
    return thumbs


def _thumb_bytes(src: Path, cfg: PublishConfig) -> bytes:
    data = src.read_bytes()
    if not cfg.thumb_size:
        return data
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.thumbnail((cfg.thumb_size, cfg.thumb_size))
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=cfg.thumb_quality)
    return buf.getvalue()


def write_thumbs(r: Renderer, writer: SiteWriter, refs: set, cfg: PublishConfig) -> int:
    """Copy (or re-encode) the thumbnails the pages show; returns how many were missing."""
    from app.routes.files import thumbs_dir

    dirs: dict[str, Path] = {}
    missing = 0
    for ds, sid in progress(iterable=sorted(refs), desc="publish thumbnails", unit="img"):
        if ds not in dirs:
            dirs[ds] = thumbs_dir(r._request("/"), r.db, ds)
        src = dirs[ds] / f"{sid}.webp"
        if not src.is_file():
            missing += 1
            continue
        writer.write(f"thumb/{ds}/{sid}.webp", _thumb_bytes(src, cfg))
    return missing


def _select_saes(r: Renderer, wanted: tuple[str, ...]) -> list[str]:
    have = r.sae_ids()
    unknown = [s for s in wanted if s not in have]
    if unknown:
        raise ConfigError(f"--sae {unknown[0]!r}: not in the index; it has {', '.join(have)}")
    return list(wanted) if wanted else have


def _up_to_date(cfg: PublishConfig, key: str) -> bool:
    prev = read_site_manifest(cfg.out)
    files = prev.get("files", {})
    return prev.get("inputs_key") == key and all((cfg.out / rel).is_file() for rel in files)


def _open(cfg: PublishConfig) -> Renderer:
    from app.errors import AppError, IndexSchemaError

    if not cfg.index.is_file():
        raise ConfigError(f"{cfg.index}: no such index; build one with `saescope index` or `saescope demo`")
    try:
        return Renderer(cfg.index, SECRET)
    except (IndexSchemaError, AppError) as e:
        raise ConfigError(str(e)) from None


def publish(cfg: PublishConfig) -> PublishResult:
    """Write (or update) the static site; see the module docstring."""
    prefix, static_files = static_prefix()
    key = inputs_key(cfg, static_files) if cfg.index.is_file() else ""
    writer = SiteWriter.open(cfg.out)
    if key and _up_to_date(cfg, key):
        return _result(cfg, writer, [], skipped=True)
    t0, stages = time.perf_counter(), {}
    r = _open(cfg)
    try:
        sae_ids = _select_saes(r, cfg.saes)
        ps = PageSet(r, prefix, cfg.base_url)
        home_pages(ps)
        tasks = []
        for sid in sae_ids:
            sae_pages(ps, sid, cfg.game_rounds, cfg.index.name)
            fids = r.feature_ids(sid, list(cfg.features) if cfg.features is not None else None)
            ps.files.update(search_files(r.db, r.sae(sid), fids))
            ps.files.update(table_file(r.db, r.sae(sid), fids))
            kind = "feature+map" if r.n_map_samples(sid) <= MAX_FEATURE_MAP_SAMPLES else "feature"
            tasks += [(kind, sid, fids[i:i + CHUNK]) for i in range(0, len(fids), CHUNK)]
            sids = r.sample_ids(sid)
            tasks += [("sample", sid, sids[i:i + CHUNK]) for i in range(0, len(sids), CHUNK)]
        thumbs: set = set()
        ps.files[".nojekyll"] = b""  # GitHub Pages: serve the folder as it is, without a Jekyll build
        for rel, data in {**static_files, **ps.files}.items():
            writer.write(rel, data)
            if rel.endswith((".html", ".json")):
                thumbs |= thumb_refs(data.decode())
        job = _Job(cfg.index.resolve(), cfg.out, writer.old, prefix, cfg.base_url, cfg.top_samples)
        stages["site-wide pages, search and table index"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        thumbs |= render_pages(cfg, job, writer, tasks, stages)
        stages["feature and sample pages"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        missing = write_thumbs(r, writer, thumbs, cfg)
        stages["thumbnails"] = time.perf_counter() - t1
    finally:
        r.close()
    removed = writer.finish({"inputs_key": key, "index": str(cfg.index), "static": prefix})
    warn = [f"{missing} thumbnails are missing from the index's datasets; their tiles show no image"] if missing else []
    res = _result(cfg, writer, removed, skipped=False, warnings=warn)
    res.stages = stages
    return res


def _result(cfg: PublishConfig, writer: SiteWriter, removed: list[str], skipped: bool,
            warnings: list[str] | None = None) -> PublishResult:
    files = writer.files if not skipped else read_site_manifest(cfg.out).get("files", {})
    n_bytes = sum(v[1] for v in files.values())
    warnings = list(warnings or [])
    if n_bytes > cfg.size_limit:
        warnings.append(f"the site is {fmt_bytes(n_bytes)}, above {fmt_bytes(cfg.size_limit)} (GitHub Pages' limit is "
                        "1 GB): publish fewer SAEs or --features, fewer --top-samples or a smaller --thumb-size")
    return PublishResult(out=cfg.out, n_files=len(files), n_bytes=n_bytes, written=sorted(writer.written),
                         removed=removed, skipped=skipped, warnings=warnings)


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

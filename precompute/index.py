"""`saescope index`: scan stores through SAEs and write the explorer's DuckDB file.

The file is built under a temporary name and renamed into place, so a crash never leaves a
broken index and the old one keeps serving. A hash of the inputs is stored in `index_meta`;
re-running with the same inputs returns at once. Under torchrun the ranks share the scans
(`precompute.scan` merges their results exactly) and rank 0 writes the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from precompute.alignment import MAX_STORED_COSINES, align, hooked_layer, neuron_vectors, ultra_low_density_cluster
from precompute.coactivation import top_coactivation
from precompute.concepts import feature_concepts
from precompute.concepts_joint import store_joint_concepts
from precompute.dataset import read_dataset_manifest
from precompute.heads import load_classifier_tail
from precompute.index_schema import DERIVED, TABLES, create_tables, finalize, insert_table
from precompute.layout import hdbscan_labels, umap_2d
from precompute.naming import NAME_TOP, ContrastNamer, cluster_name, entropy_bits, words_of
from precompute.scan import patch_heatmaps, scan_features, scan_quantiles
from sae_core import distributed
from sae_core.checkpoint import load
from sae_core.contract import SAESCOPE_VERSION, SCHEMA_VERSION, canonical_json, portable_path, resolve_recorded, short_hash
from sae_core.errors import ConfigError, DataError, FormatError
from sae_core.store import ActivationStore
from sae_core.validate import check_numbers, resolve_precision


@dataclass(frozen=True)
class IndexConfig:
    saes: tuple[str, ...] = field(default=(), metadata={"help": "SAE checkpoint folders or files (repeat --sae)"})
    store: str = field(default="", metadata={"help": "activation store (default: the store each SAE was trained on)"})
    out: str = field(default="data/index/explorer.duckdb", metadata={"help": "index file to write"})
    top_n: int = field(default=64, metadata={"help": "top-activating samples kept per feature"})
    quantile_bins: int = field(default=10, metadata={"help": "activation bins for quantile samples"})
    per_bin: int = field(default=8, metadata={"help": "samples kept per activation bin"})
    sample_top: int = field(default=16, metadata={"help": "most active features kept per sample"})
    neighbors: int = field(default=10, metadata={"help": "nearest features by decoder cosine"})
    chunk_samples: int = field(default=4096, metadata={"help": "samples per scan chunk (bounds memory)"})
    seed: int = field(default=0, metadata={"help": "seed of layouts and quantile sampling"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    precision: str = field(default="auto", metadata={
        "help": "TopK encoder matmul: float32 (exact), bfloat16 (candidates re-scored in float32, for GPU "
                "tensor cores) or auto (bfloat16 on CUDA, else float32)"})

    def __post_init__(self) -> None:
        check_numbers(self, positive=("top_n", "quantile_bins", "per_bin", "sample_top", "chunk_samples"),
                      non_negative=("neighbors", "seed"))
        resolve_precision(self.precision, "cpu")  # refuses unknown names early


@dataclass(frozen=True)
class IndexResult:
    fpath: Path
    sae_ids: list[str]
    reused: bool


def build_index(cfg: IndexConfig) -> IndexResult:
    """Under torchrun all ranks scan slices of each store; rank 0 alone lays out, names and writes
    the file. Every rank returns the same result once the index is in place."""
    if not cfg.saes:
        raise ConfigError("no SAE given; pass --sae PATH (a checkpoint folder from `saescope train`)")
    if Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is a folder; name the index file to write, e.g. {Path(cfg.out) / 'explorer.duckdb'}")
    cfg = local_sae_paths(cfg)
    with distributed.session() as d, _duckdb_errors_are_user_errors(cfg.out):
        result = distributed.broadcast_object(_reused_index(cfg) if d.is_main else None)
        if result is None:
            result = _build(cfg, d)
        distributed.barrier()
        return result


@contextlib.contextmanager
def _duckdb_errors_are_user_errors(out: str):
    """DuckDB reports a full disk or an unwritable folder as its own exceptions, not OSError: one
    line and exit 2 like any file problem (the temporary file is already gone), not an internal error."""
    import duckdb

    try:
        yield
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "free some space or choose another --out" if "space" in first.lower() else "check the disk and --out, then re-run"
        raise FormatError(f"{out}: the index could not be written ({type(e).__name__}: {first}); {hint}") from None


def _reused_index(cfg: IndexConfig) -> IndexResult | None:
    import duckdb

    out = Path(cfg.out)
    if out.exists():
        try:
            with duckdb.connect(str(out), read_only=True) as con:
                row = con.execute("SELECT value FROM index_meta WHERE key = 'inputs_hash'").fetchone()
                if row and row[0] == _inputs_hash(cfg):
                    ids = [r[0] for r in con.execute("SELECT sae_id FROM saes ORDER BY sae_id").fetchall()]
                    return IndexResult(out, ids, reused=True)
        except duckdb.Error:
            pass  # an unreadable old index is simply rebuilt
    return None


def _build(cfg: IndexConfig, d: distributed.Dist) -> IndexResult:
    import duckdb

    out = Path(cfg.out)
    device = distributed.pick_device(cfg.device)
    if not d.is_main:  # the other ranks only take part in the scans
        datasets_done: set[str] = set()
        sae_ids: list[str] = []
        for spec in cfg.saes:
            sae_ids.append(_index_one(None, cfg, spec, device, datasets_done, taken=set(sae_ids)))
        return IndexResult(out, sae_ids, reused=False)
    inputs = _inputs_hash(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        create_tables(con)
        con.execute("INSERT INTO schema_version VALUES (?, ?, current_timestamp)", [SCHEMA_VERSION, SAESCOPE_VERSION])
        con.execute("INSERT INTO index_meta VALUES ('inputs_hash', ?), ('encoder_precision', ?), ('quantile_bins', ?)",
                    [inputs, _precision(cfg), str(cfg.quantile_bins)])
        # the resolved options (flags over --config), written inside the index so they appear with it, atomically
        con.execute("INSERT INTO index_meta VALUES ('config', ?)", [json.dumps(dataclasses.asdict(cfg), sort_keys=True)])
        datasets_done = set()
        sae_ids = []
        for spec in cfg.saes:
            sae_ids.append(_index_one(con, cfg, spec, device, datasets_done, taken=set(sae_ids)))
        _record_portable_paths(con, out)
        finalize(con)
        con.execute("CHECKPOINT")
        con.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
        raise
    return IndexResult(out, sae_ids, reused=False)


def _remove_stale_temps(out: Path) -> None:
    """Temporary files of builds whose process is gone (killed with -9: no cleanup ran)."""
    for tmp in out.parent.glob(f"{out.name}.tmp-*"):
        pid = tmp.name.removeprefix(f"{out.name}.tmp-").removesuffix(".wal")
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _inputs_hash(cfg: IndexConfig) -> str:
    """Identity of the inputs: the config plus size and mtime of every SAE file (resumable
    training state excluded), of each store's manifest and of its dataset's files."""
    stamped: list[Path] = []
    for spec in cfg.saes:
        p = Path(spec)
        stamped += [f for f in sorted(p.rglob("*")) if "state" not in f.relative_to(p).parts] if p.is_dir() else [p]
        store_dpath = Path(cfg.store) if cfg.store else _named_store(p)
        if store_dpath is not None:
            stamped.append(store_dpath / "manifest.json")
            with contextlib.suppress(OSError, json.JSONDecodeError):
                ds = Path(json.loads((store_dpath / "manifest.json").read_text()).get("dataset_dpath") or "")
                ds = ds if ds.is_absolute() else store_dpath / ds
                stamped += [ds / "manifest.json", ds / "samples.parquet"]
    stamps = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in stamped if f.is_file()]
    ident = {k: v for k, v in cfg.__dict__.items() if k not in ("out", "device", "chunk_samples")}
    ident["precision"] = _precision(cfg)
    # the tables themselves: an index written before a column or table was added is rebuilt, not reused
    return short_hash({"cfg": ident, "files": stamps, "schema": SCHEMA_VERSION, "tables": {**TABLES, **DERIVED}}, 32)


def local_sae_paths(cfg: IndexConfig) -> IndexConfig:
    """`hf://owner/repo/sub` SAEs as their folders in the Hugging Face cache (downloaded when online)."""
    from sae_core.hub import is_hub_path, resolve_hub_path

    if not any(is_hub_path(s) for s in cfg.saes):
        return cfg
    return dataclasses.replace(cfg, saes=tuple(str(resolve_hub_path(s)) if is_hub_path(s) else s for s in cfg.saes))


def _precision(cfg: IndexConfig) -> str:
    return resolve_precision(cfg.precision, distributed.pick_device(cfg.device))


def _named_store(sae_path: Path) -> Path | None:
    """The store a saescope checkpoint names in its cfg.json, if any."""
    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError, TypeError):
        dpath = json.loads((sae_path / "cfg.json").read_text()).get("store", {}).get("dpath")
        return resolve_recorded(dpath, sae_path) if dpath else None
    return None


def _record_portable_paths(con, out: Path) -> None:
    """Thumbnail, checkpoint and store folders inside the index's data root are stored relative to
    the index's folder, so a moved or copied `data/` still serves (docs/data-contract.md)."""
    base = out.parent
    for table, key, cols in (("datasets", "dataset_id", ("thumbs_dpath",)), ("saes", "sae_id", ("checkpoint", "store"))):
        for row in con.execute(f"SELECT {key}, {', '.join(cols)} FROM {table}").fetchall():
            values = [portable_path(v, base) if v else v for v in row[1:]]
            con.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in cols)} WHERE {key} = ?", [*values, row[0]])


def _resolve_store(cfg: IndexConfig, sae_dpath: Path) -> ActivationStore:
    if cfg.store:
        return ActivationStore(cfg.store)
    cfg_fpath = sae_dpath / "cfg.json"
    summary = json.loads(cfg_fpath.read_text()).get("store") if cfg_fpath.exists() else None
    if not summary or not summary.get("dpath"):
        raise ConfigError(f"{sae_dpath}: the SAE does not name its activation store; pass --store PATH")
    return ActivationStore(resolve_recorded(summary["dpath"], sae_dpath))


@dataclass
class _Inputs:
    """One SAE's resolved inputs: checkpoint, store and the dataset the explorer shows with it."""

    sae_id: str
    sae_dpath: Path
    sae: object
    store: ActivationStore
    ds_dpath: Path
    ds_manifest: dict
    thumbs: Path | None


def _resolve_inputs(cfg: IndexConfig, spec: str, taken: set[str]) -> _Inputs:
    sae_dpath = Path(spec)
    sae = load(sae_dpath)
    store = _resolve_store(cfg, sae_dpath)
    if sae.cfg.d_in != store.d_in:
        raise DataError(f"SAE {spec} has d_in={sae.cfg.d_in} but store {store.dpath} has d_in={store.d_in}; index it with the store it was trained on")
    if not store.manifest.get("dataset_dpath"):
        raise FormatError(f"{store.dpath}: the store names no dataset folder (dataset_dpath); re-run `saescope extract`")
    ds_dpath = Path(store.manifest["dataset_dpath"])
    if not ds_dpath.is_absolute():
        ds_dpath = store.dpath / ds_dpath
    ds_manifest = read_dataset_manifest(ds_dpath)
    thumbs = ds_dpath / "thumbs" if ds_manifest["modality"] == "image" else None
    if store.manifest.get("thumbs_dpath"):  # images a generative model drew for these captions (FLUX)
        ds_manifest = {**ds_manifest, "dataset_id": f"{ds_manifest['dataset_id']}.{store.store_id}", "modality": "image"}
        thumbs = store.dpath / store.manifest["thumbs_dpath"]
    return _Inputs(_sae_id(sae_dpath, taken), sae_dpath, sae, store, ds_dpath, ds_manifest, thumbs)


def _index_one(con, cfg: IndexConfig, spec: str, device: str, datasets_done: set[str], taken: set[str]) -> str:
    """Scan one SAE (on every torchrun rank), then, on rank 0 (`con` given), write its tables."""
    inp = _resolve_inputs(cfg, spec, taken)
    precision = _precision(cfg)
    scan = scan_features(inp.sae, inp.store, cfg.top_n, cfg.sample_top, cfg.chunk_samples, device, precision)
    quant = scan_quantiles(inp.sae, inp.store, scan.max_scores, cfg.quantile_bins, cfg.per_bin, cfg.chunk_samples,
                           cfg.seed, device, precision)
    if con is None:  # a torchrun rank other than 0: its share of the scans is done
        return inp.sae_id
    samples = pq.read_table(inp.ds_dpath / "samples.parquet")
    dataset_id = inp.ds_manifest["dataset_id"]
    if dataset_id not in datasets_done:
        _insert_dataset(con, inp.ds_manifest, inp.thumbs, samples)
        datasets_done.add(dataset_id)
    captions = samples.column("caption").to_pylist()
    labels = samples.column("label").to_pylist()
    docs = [words_of(c, lab) for c, lab in zip(captions, labels)]
    _insert_feature_samples(con, inp, scan, quant, device)
    names = _insert_labels_and_names(con, inp, scan, docs, labels)
    w_dec = torch.nn.functional.normalize(inp.sae.W_dec.detach().float(), dim=-1).cpu()  # the scans moved the SAE to the device
    _insert_neighbors(con, inp.sae_id, w_dec, cfg.neighbors)
    _insert_coactivation(con, inp.sae_id, scan, cfg.neighbors)
    _insert_features(con, inp, cfg, scan, w_dec, names)
    _insert_sample_map(con, inp, cfg, scan, docs)
    _insert_sample_top(con, inp.sae_id, scan)
    _insert_concepts(con, inp, scan, device)
    _insert_alignment(con, inp)
    _insert_low_density_cluster(con, inp.sae_id, scan.n_fired / max(inp.store.n_samples, 1), inp.sae.W_enc)
    _insert_sae_row(con, inp.sae_id, inp.sae, inp.sae_dpath, inp.store, dataset_id, scan.metrics)
    _insert_training_curve(con, inp.sae_id, inp.sae_dpath)
    return inp.sae_id


def _insert_feature_samples(con, inp: _Inputs, scan, quant, device: str) -> None:
    """feature_top, feature_quantiles (with patch heatmaps) and feature_hist."""
    sae_id, d_sae = inp.sae_id, inp.sae.cfg.d_sae
    top_f, top_r = np.nonzero(scan.top_ids.T >= 0)
    top_s = scan.top_ids.T[top_f, top_r]
    top_v = scan.top_values.T[top_f, top_r]
    q_f, q_b, q_r = np.nonzero(quant.q_ids >= 0)
    q_s, q_v = quant.q_ids[q_f, q_b, q_r], quant.q_values[q_f, q_b, q_r]
    hm_top = sc_top = [None] * len(top_f)
    hm_q = sc_q = [None] * len(q_f)
    if inp.store.grid:  # one pass: a sample among both the top and the quantile samples is encoded once
        maps, scales = patch_heatmaps(inp.sae, inp.store, np.concatenate([top_f, q_f]), np.concatenate([top_s, q_s]), device)
        hm_top, hm_q = [bytes(h) for h in maps[: len(top_f)]], [bytes(h) for h in maps[len(top_f) :]]
        sc_top, sc_q = scales[: len(top_f)], scales[len(top_f) :]
    insert_table(con, "feature_top", {
        "sae_id": [sae_id] * len(top_f), "feature_id": top_f.astype(np.int32), "rank": top_r.astype(np.int32),
        "sample_id": top_s, "activation": top_v.astype(np.float32), "heatmap": hm_top, "heatmap_scale": sc_top})
    insert_table(con, "feature_quantiles", {
        "sae_id": [sae_id] * len(q_f), "feature_id": q_f.astype(np.int32), "bin": q_b.astype(np.int32),
        "rank": q_r.astype(np.int32), "sample_id": q_s, "activation": q_v.astype(np.float32),
        "heatmap": hm_q, "heatmap_scale": sc_q})
    insert_table(con, "feature_hist", {
        "sae_id": [sae_id] * d_sae, "feature_id": np.arange(d_sae, dtype=np.int32),
        "edges": [e.tolist() for e in quant.hist_edges], "counts": [c.tolist() for c in quant.hist_counts]})


def _insert_labels_and_names(con, inp: _Inputs, scan, docs: list[list[str]], labels: list) -> dict[str, list]:
    """feature_labels; returns the features table's name, name score and label columns."""
    ids, values = scan.top_ids[:NAME_TOP].T, scan.top_values[:NAME_TOP].T
    named = ContrastNamer(docs).name_all(ids, np.where(ids >= 0, np.maximum(values, 0), 0))
    cols: dict[str, list] = {"names": named, "label_entropy": [], "top_label": []}
    label_rows: dict[str, list] = {k: [] for k in ("sae_id", "feature_id", "label", "count", "fraction")}
    for f in range(inp.sae.cfg.d_sae):
        lab = Counter(labels[int(s)] for s in scan.top_ids[:, f] if s >= 0 and labels[int(s)] is not None)
        total = sum(lab.values())
        cols["label_entropy"].append(entropy_bits(list(lab.values())))
        cols["top_label"].append(lab.most_common(1)[0][0] if lab else None)
        for label, count in sorted(lab.items(), key=lambda kv: (-kv[1], kv[0])):
            for key, value in zip(label_rows, (inp.sae_id, f, label, count, count / total)):
                label_rows[key].append(value)
    insert_table(con, "feature_labels", label_rows)
    return cols


def _insert_neighbors(con, sae_id: str, w_dec: torch.Tensor, k: int) -> None:
    nb_f, nb_r, nb_n, nb_c = _neighbors(w_dec, k)
    insert_table(con, "feature_neighbors", {"sae_id": [sae_id] * len(nb_f), "feature_id": nb_f, "rank": nb_r,
                                            "neighbor_id": nb_n, "cosine": nb_c})


def _insert_coactivation(con, sae_id: str, scan, k: int) -> None:
    """Co-activation neighbours from the pair counts the scan kept, and how far their n_both may be
    low (index_meta `coactivation_undercount`: JSON {sae_id: bound}, 0 = exact; `precompute.coactivation`)."""
    if scan.co_counts is None:
        return
    row = con.execute("SELECT value FROM index_meta WHERE key = 'coactivation_undercount'").fetchone()
    bounds = (json.loads(row[0]) if row else {}) | {sae_id: int(scan.co_counts.undercount)}
    con.execute("DELETE FROM index_meta WHERE key = 'coactivation_undercount'")
    con.execute("INSERT INTO index_meta VALUES ('coactivation_undercount', ?)", [json.dumps(bounds, sort_keys=True)])
    f, r, g, jac, both = top_coactivation(scan.co_counts, k)
    insert_table(con, "feature_coactivation", {"sae_id": [sae_id] * len(f), "feature_id": f, "rank": r, "neighbor_id": g,
                                               "jaccard": jac, "n_both": both})


def _insert_concepts(con, inp: _Inputs, scan, device: str) -> None:
    """feature_concepts, for stores of classifiers whose hooked layer feeds the classes (`precompute.heads`)
    and, method `joint`, of CLIP/SigLIP image towers (`precompute.concepts_joint`)."""
    m = inp.store.manifest
    tail = load_classifier_tail(m.get("model") or "", m.get("layer") or "", m.get("token_selection") or "", device)
    if tail is not None:
        _insert_concept_rows(con, inp.sae_id, feature_concepts(inp.sae, tail, inp.store, scan.top_ids, scan.max_scores, device))
    joint = store_joint_concepts(inp.sae, m, scan.max_scores > 0, device, inp.ds_manifest.get("modality") or "image")
    if joint is not None:
        _insert_concept_rows(con, inp.sae_id, joint)


def _insert_concept_rows(con, sae_id: str, rows) -> None:
    n = len(rows.feature_id)
    insert_table(con, "feature_concepts", {
        "sae_id": [sae_id] * n, "feature_id": np.asarray(rows.feature_id, np.int32), "kind": rows.kind,
        "rank": np.asarray(rows.rank, np.int32), "concept": rows.concept, "score": np.asarray(rows.score, np.float32),
        "method": [rows.method] * n})


def _insert_alignment(con, inp: _Inputs) -> None:
    """feature_alignment and sae_alignment, for layers whose neurons are known (`precompute.alignment`)."""
    m = inp.store.manifest
    layer = hooked_layer(m.get("model") or "", m.get("layer") or "")
    neurons = neuron_vectors(layer) if layer is not None else None
    if neurons is None or neurons.shape[1] != inp.sae.cfg.d_in:
        return
    a = align(inp.sae.W_enc, neurons)
    d_sae = len(a.max_cos)
    keep = d_sae * neurons.shape[0] <= MAX_STORED_COSINES
    insert_table(con, "feature_alignment", {
        "sae_id": [inp.sae_id] * d_sae, "feature_id": np.arange(d_sae, dtype=np.int32), "max_cos": a.max_cos,
        "best_neuron": a.best_neuron, "n_above": a.n_above, "cosines": [c.tobytes() for c in a.cosines] if keep else [None] * d_sae})
    insert_table(con, "sae_alignment", {"sae_id": [inp.sae_id], "n_neurons": [neurons.shape[0]], "threshold": [a.threshold],
                                        "random_max_cos": [a.random_max_cos.tolist()]})


def _insert_low_density_cluster(con, sae_id: str, density: np.ndarray, w_enc: torch.Tensor) -> None:
    c = ultra_low_density_cluster(density, w_enc)
    if c is not None:
        insert_table(con, "low_density_cluster", {"sae_id": [sae_id], "feature_ids": [c.feature_ids.tolist()],
                                                  "gap_decades": [c.gap_decades], "mean_pairwise_cos": [c.mean_pairwise_cos]})


def _insert_features(con, inp: _Inputs, cfg: IndexConfig, scan, w_dec: torch.Tensor, names: dict[str, list]) -> None:
    """The features table (stats, names, feature-map layout) and the feature map's clusters."""
    sae_id, d_sae = inp.sae_id, inp.sae.cfg.d_sae
    with _torch_threads_kept():
        xy = umap_2d(w_dec.numpy(), seed=cfg.seed, metric="cosine")
        clusters = hdbscan_labels(xy)
    density = scan.n_fired / max(inp.store.n_samples, 1)
    mean_act = np.where(scan.n_fired > 0, scan.sum_scores / np.maximum(scan.n_fired, 1), 0.0)
    insert_table(con, "features", {
        "sae_id": [sae_id] * d_sae, "feature_id": np.arange(d_sae, dtype=np.int32), "name": [n.text for n in names["names"]],
        "density": density, "n_fired": scan.n_fired.astype(np.int64), "mean_act": mean_act,
        "max_act": scan.max_scores.astype(np.float64), "label_entropy": names["label_entropy"],
        "top_label": names["top_label"], "cluster_id": clusters, "x": xy[:, 0], "y": xy[:, 1],
        "name_score": [n.score for n in names["names"]], "name_coverage": [n.coverage for n in names["names"]]})
    members = [[names["names"][int(f)] for f in np.nonzero(clusters == c)[0]] for c in sorted(set(clusters.tolist()) - {-1})]
    _insert_clusters(con, sae_id, "features", xy, clusters, [cluster_name(m) for m in members])


def _insert_sample_map(con, inp: _Inputs, cfg: IndexConfig, scan, docs: list[list[str]]) -> None:
    """The dataset map: UMAP of the samples' sparse codes, its clusters and their names."""
    import scipy.sparse as sp

    n, d_sae = inp.store.n_samples, inp.sae.cfg.d_sae
    m = scan.sample_top_ids.shape[1]
    mat = sp.csr_matrix((np.maximum(scan.sample_top_values.ravel(), 0), (np.repeat(np.arange(n), m), scan.sample_top_ids.ravel())),
                        shape=(n, d_sae))
    with _torch_threads_kept():
        sxy = umap_2d(mat, seed=cfg.seed, metric="cosine") if mat.nnz else np.zeros((n, 2), np.float32)
        sclusters = hdbscan_labels(sxy)
    insert_table(con, "sample_map", {"sae_id": [inp.sae_id] * n, "sample_id": scan.sample_ids, "x": sxy[:, 0], "y": sxy[:, 1],
                                     "cluster_id": sclusters})
    namer = ContrastNamer(docs)
    by_row = np.asarray(scan.sample_ids)
    named = [namer.name(by_row[sclusters == c].tolist(), n_words=2) for c in sorted(set(sclusters.tolist()) - {-1})]
    _insert_clusters(con, inp.sae_id, "samples", sxy, sclusters, [(n.text, n.score) for n in named])


def _insert_sample_top(con, sae_id: str, scan) -> None:
    rows_s, ranks = np.nonzero(scan.sample_top_values > 0)
    insert_table(con, "sample_top", {"sae_id": [sae_id] * len(rows_s), "sample_id": scan.sample_ids[rows_s], "rank": ranks.astype(np.int32),
                                     "feature_id": scan.sample_top_ids[rows_s, ranks], "activation": scan.sample_top_values[rows_s, ranks]})


@contextlib.contextmanager
def _torch_threads_kept():
    """UMAP's numba start-up resets the OpenMP thread count; later scans must keep the caller's, so their
    float reductions (and results) do not depend on whether a layout ran before them."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _sae_id(dpath: Path, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in dpath.name) or "sae"
    sae_id, i = base, 2
    while sae_id in taken:
        sae_id, i = f"{base}-{i}", i + 1
    return sae_id


def _neighbors(w_dec: torch.Tensor, k: int, chunk: int = 4096):
    d_sae = w_dec.shape[0]
    k = min(k, d_sae - 1)
    fs, rs, ns, cs = [], [], [], []
    for start in range(0, d_sae, chunk):
        sims = w_dec[start : start + chunk] @ w_dec.T
        rows = torch.arange(start, min(start + chunk, d_sae))
        sims[rows - start, rows] = -torch.inf
        vals, idx = sims.topk(k, dim=1)
        fs.append(rows.repeat_interleave(k))
        rs.append(torch.arange(k).repeat(len(rows)))
        ns.append(idx.flatten())
        cs.append(vals.flatten())
    cat = lambda xs, dt: torch.cat(xs).numpy().astype(dt)  # noqa: E731
    return cat(fs, np.int32), cat(rs, np.int32), cat(ns, np.int32), cat(cs, np.float32)


def _insert_clusters(con, sae_id: str, map_name: str, xy: np.ndarray, labels: np.ndarray, names: list[tuple[str, float]]) -> None:
    """One row per cluster (ids ascending, noise -1 left out); `names` are (name, score) in that order."""
    rows: dict[str, list] = {k: [] for k in ("sae_id", "map", "cluster_id", "name", "size", "x", "y", "name_score")}
    for c, (name, score) in zip(sorted(set(labels.tolist()) - {-1}), names, strict=True):
        members = np.nonzero(labels == c)[0]
        values = (sae_id, map_name, int(c), name, len(members), float(xy[members, 0].mean()), float(xy[members, 1].mean()), score)
        for key, value in zip(rows, values):
            rows[key].append(value)
    insert_table(con, "clusters", rows)


def _insert_dataset(con, manifest: dict, thumbs: Path | None, samples: pa.Table) -> None:
    con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)", [
        manifest["dataset_id"], manifest["modality"], manifest["source"], manifest["n_samples"],
        str(thumbs.resolve()) if thumbs else None, manifest["has_labels"]])
    n = samples.num_rows
    insert_table(con, "samples", {
        "dataset_id": [manifest["dataset_id"]] * n, "sample_id": samples.column("sample_id").to_numpy(),
        "source": samples.column("source").to_pylist(), "caption": samples.column("caption").to_pylist(),
        "label": samples.column("label").to_pylist(), "width": samples.column("width").to_pylist(),
        "height": samples.column("height").to_pylist()})


def _insert_sae_row(con, sae_id: str, sae, sae_dpath: Path, store: ActivationStore, dataset_id: str, metrics: dict) -> None:
    cfg_fpath = sae_dpath / "cfg.json"
    ckpt_cfg = json.loads(cfg_fpath.read_text()) if cfg_fpath.exists() else {}
    m = store.manifest
    grid = store.grid or (None, None)
    title = f"{m.get('model')} · {m.get('layer')} · {sae.cfg.arch}" + (f" k={sae.cfg.k}" if sae.cfg.is_topk_family else "")
    con.execute("INSERT INTO saes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        sae_id, title, dataset_id, m.get("model"), m.get("layer"), m.get("token_selection"), sae.cfg.arch,
        sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k if sae.cfg.is_topk_family else None, grid[0], grid[1],
        store.n_samples, store.n_tokens, metrics["l0"], metrics["explained_variance"], metrics["fvu"],
        metrics["dead_fraction"], str(sae_dpath.resolve()), str(store.dpath.resolve()),
        canonical_json({"sae": ckpt_cfg.get("sae"), "train": ckpt_cfg.get("train"), "heldout_metrics": ckpt_cfg.get("metrics")})])


def _insert_training_curve(con, sae_id: str, sae_dpath: Path) -> None:
    log = sae_dpath / "metrics.jsonl"
    if not log.exists():
        return
    rows: dict[str, list] = {k: [] for k in ("sae_id", "step", "n_tokens", "loss", "fvu", "l0", "dead_fraction")}
    for line in log.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            raise FormatError(f"{log}: corrupt line {line[:60]!r}") from None
        for key in rows:
            rows[key].append(sae_id if key == "sae_id" else r.get(key))
    insert_table(con, "training_curve", rows)

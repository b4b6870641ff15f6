"""`saescope extract`: run a model over a dataset and write the activation store.

The store folder is named by a hash of the config, so the same extraction is found and reused;
a killed run resumes after its last complete shard (shards are written atomically and the
manifest lists only complete ones). Under torchrun the ranks split the samples into contiguous
slices of whole shards and each resumes its own slice (see `sae_core.store.RankStoreWriter`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from precompute.dataset import DatasetConfig, PreparedDataset, open_dataset_source, prepare_dataset, thumbnail_webp
from precompute.extractors import build_extractors
from precompute.extractors.identity import canonical_spec, model_revision, store_identity
from precompute.extractors.multi import MultiLayerExtractor, split_layers
from sae_core import distributed
from sae_core.contract import atomic_write_bytes, atomic_write_json, folder_id
from sae_core.errors import ConfigError
from sae_core.progress import progress
from sae_core.store import ActivationStore, RankStoreWriter, StoreWriter
from sae_core.validate import check_numbers, resolve_precision

log = logging.getLogger(__name__)
GENERATED_THUMBS = "thumbs"
"""Store sub-folder of the images a generative model drew for each sample (FLUX)."""


@dataclass(frozen=True)
class ExtractConfig:
    dataset: str = field(default="emoji", metadata={"help": "image folder, table (.csv/.tsv/.parquet/.jsonl), WebDataset tars ('shards-{00000..00009}.tar'), a save_to_disk folder, text:FILE, wordnet[:N] or emoji[:N]"})
    model: str = field(default="efficientnet-lite0", metadata={
        "help": "efficientnet-lite0, minilm, hf:<name or folder> (CLIP, SigLIP, SigLIP2, ViT, DINOv2, ConvNeXt, ResNet and their "
                "image classifiers), diffusers:<name or folder>, open_clip:<architecture or folder> (with --pretrained)"})
    layer: str = field(default="head", metadata={"help": "layer to read (e.g. head, blocks.15, -2 for CLIP's penultimate block); "
                                                          "several, comma-separated (--layer=-2,-8,-14), fill one store each from one pass"})
    tokens: str = field(default="pooled", metadata={"help": "token selection: pooled, cls, patches, all or registers (DINOv2); "
                                                            "one for every layer, or one per layer (pooled,patches)"})
    image_size: int = field(default=0, metadata={"help": "input resolution (0: the model's default)"})
    dtype: str = field(default="float32", metadata={"help": "stored dtype: float32, float16 or bfloat16"})
    shard_samples: int = field(default=4096, metadata={"help": "samples per shard file"})
    batch_size: int = field(default=64, metadata={"help": "samples per forward pass"})
    num_workers: int = field(default=-1, metadata={
        "help": "data-loader processes decoding images (-1: 0 on a CPU, whose cores run the model; min(cores - 1, 16) on CUDA)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    data_root: str = field(default="data", metadata={"help": "root of the datasets/ and stores/ folders"})
    image_col: str = field(default="image", metadata={"help": "table column with image paths"})
    caption_col: str = field(default="caption", metadata={"help": "table column with captions"})
    label_col: str = field(default="label", metadata={"help": "table column with labels"})
    limit: int = field(default=0, metadata={"help": "use only the first N samples (0: all)"})
    fast_decode: bool = field(default=False, metadata={
        "help": "decode JPEGs at a reduced DCT scale no smaller than the model's input (2-8x fewer pixels; "
                "activations differ slightly from a full decode, so it is part of the store's identity)"})
    model_dtype: str = field(default="auto", metadata={
        "help": "dtype of hf: models' weights and forward: float32, bfloat16, or auto (bfloat16 on CUDA, else float32)"})
    revision: str = field(default="", metadata={
        "help": "hub branch, tag or commit of an hf:/diffusers: hub model (default: the commit 'main' resolves to; "
                "local folders are identified by a hash of their files)"})
    pretrained: str = field(default="", metadata={
        "help": "open_clip:<architecture> weights: a pretrained tag (e.g. laion2b_s34b_b79k) or a checkpoint file "
                "(a file is identified by its hash)"})
    verbose: bool = field(default=False, metadata={"help": "show the model libraries' loading reports and download bars"})

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype={self.dtype!r}; choose float32, float16 or bfloat16")
        check_numbers(self, positive=("batch_size", "shard_samples"), non_negative=("image_size", "limit"))
        if self.num_workers < -1:
            raise ConfigError(f"num_workers={self.num_workers}; use -1 (auto), 0 (decode in this process) or more")
        resolve_precision(self.model_dtype, "cpu", "model_dtype")  # refuses unknown names early
        if 0 < self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} is too small; use 0 (the model's default) or at least 32")


def _model_dtype(cfg: ExtractConfig) -> str:
    """Transformers towers run in bfloat16 on CUDA unless asked otherwise (fp32 wastes the tensor
    cores); the other models keep their own precision, recorded as float32."""
    if not cfg.model.startswith("hf:"):
        return "float32"
    return resolve_precision(cfg.model_dtype, distributed.pick_device(cfg.device), "model_dtype")


@dataclass(frozen=True)
class ExtractResult:
    store_dpath: Path
    dataset_dpath: Path
    n_samples: int
    reused: bool
    store_dpaths: tuple[Path, ...] = ()
    """With several layers (`--layer -2,-8`): one store per layer, in the order given (`store_dpath` is the first)."""


def extract(cfg: ExtractConfig) -> ExtractResult:
    """Under torchrun every rank forwards a contiguous slice of whole shards; rank 0 writes the manifest.

    Several comma-separated layers fill one store per layer from one pass over the data, each
    identical to the store a single-layer run writes. The function returns the same result on
    every rank, once the stores are complete.
    """
    with distributed.session() as d:
        return _extract(cfg, d)


def _extract(cfg: ExtractConfig, d: distributed.Dist) -> ExtractResult:
    device = distributed.pick_device(cfg.device)
    layers = split_layers(cfg.layer, cfg.tokens)
    dcfg = DatasetConfig(source=cfg.dataset, out=str(Path(cfg.data_root) / "datasets"),
                         image_col=cfg.image_col, caption_col=cfg.caption_col, label_col=cfg.label_col)
    source = open_dataset_source(dcfg)
    # The model, layers and tokens are checked before any thumbnail or store file is written.
    extractor = _load_extractor(cfg, layers, source.modality, device)
    info = extractor.info
    if cfg.fast_decode and info.input_side:
        source.draft_side = info.input_side  # pickled into the data-loader processes with the source
    if d.is_main:  # thumbnails are made once; the other ranks then read the finished dataset
        dataset = prepare_dataset(dcfg, source)
    distributed.barrier()
    if not d.is_main:
        dataset = prepare_dataset(dcfg, source)
    n_samples = len(dataset.kept) if not cfg.limit else min(cfg.limit, len(dataset.kept))
    revision = model_revision(cfg.model, info.model_revision)
    layer_cfgs = [replace(cfg, layer=layer, tokens=tokens) for layer, tokens in layers]
    dpaths = tuple(_store_dpath(c, dataset.manifest["dataset_id"], n_samples, revision) for c in layer_cfgs)
    done = [_is_complete(p, d) for p in dpaths]
    result = ExtractResult(dpaths[0], dataset.dpath, n_samples, reused=all(done), store_dpaths=dpaths)
    if d.is_main:
        for dpath, layer_cfg, complete in zip(dpaths, layer_cfgs, done):
            if complete:
                _record_image_size(dpath, layer_cfg)
    if all(done):
        return result
    todo = [i for i, complete in enumerate(done) if not complete]
    if d.is_main:
        log.info(f"extracting {n_samples:,} samples of {dataset.dpath.name} through {info.model} on {device} "
                 f"into {len(todo)} store{'s' if len(todo) > 1 else ''}")
    work = MultiLayerExtractor([extractor.extractors[i] for i in todo])
    headers = [_header(dataset, ex, revision, layer_cfgs[i]) for i, ex in zip(todo, work.extractors)]
    if not d.enabled:
        writers = [StoreWriter(dpaths[i], h) for i, h in zip(todo, headers)]
        _run(cfg, dataset, work, writers, 0, n_samples)
        for writer in writers:
            writer.finish()
        return result

    # Slices are whole shards, so batches (and shard contents) are those of a single-process run.
    mains = [StoreWriter(dpaths[i], h) for i, h in zip(todo, headers)] if d.is_main else []
    first, stop = distributed.split_range(n_samples, cfg.shard_samples, d)
    parts = [RankStoreWriter(dpaths[i], h, d.rank, d.world, first, stop) for i, h in zip(todo, headers)]
    _run(cfg, dataset, work, parts, first, stop)
    for part in parts:
        part.finish()
    distributed.barrier()
    for main in mains:
        main.finish_parts(d.world)
    distributed.barrier()
    return result


def _header(dataset: PreparedDataset, extractor, revision: str | None, cfg: ExtractConfig) -> dict:
    """A store manifest's header: the same for a layer whether it was extracted alone or with others."""
    info = extractor.info
    header = {
        "dataset_id": dataset.manifest["dataset_id"], "dataset_dpath": str(dataset.dpath.resolve()),
        "model": info.model, "model_revision": revision, "layer": info.layer,
        "token_selection": info.token_selection, "tokens_per_sample": info.tokens_per_sample,
        "grid": list(info.grid) if info.grid else None, "d_in": info.d_in, "dtype": cfg.dtype,
        "fingerprint": dataset.manifest["fingerprint"], "model_dtype": _model_dtype(cfg),
    }
    if info.input_side:
        header["image_size"] = info.input_side
    if extractor.generates_images:
        header["thumbs_dpath"] = GENERATED_THUMBS
    header["config"] = dataclasses.asdict(cfg)  # the resolved options (flags over --config), this layer's alone
    return header


def _load_extractor(cfg: ExtractConfig, layers: list[tuple[str, str]], modality: str, device: str) -> MultiLayerExtractor:
    """The model with a hook per layer, or a one-line error for a bad model, layer, token selection or input kind."""
    with contextlib.redirect_stdout(io.StringIO()):  # some model packages print on load
        extractors = build_extractors(cfg.model, layers, device=device, image_size=cfg.image_size or None, modality=modality,
                                      dtype=getattr(torch, _model_dtype(cfg)), revision=cfg.revision or None, verbose=cfg.verbose,
                                      pretrained=cfg.pretrained or None)
    if extractors[0].info.modality != modality:
        raise ConfigError(f"model {cfg.model} takes {extractors[0].info.modality} inputs but dataset {cfg.dataset} is {modality}")
    return MultiLayerExtractor(extractors)


def _store_dpath(cfg: ExtractConfig, dataset_id: str, n_samples: int, revision: str | None) -> Path:
    """The store folder: a hash of everything that changes its rows, the weights included
    (`precompute.extractors.identity`); the path spelling of a local model folder is left out."""
    ident = {"dataset": dataset_id, **store_identity(canonical_spec(cfg.model), revision), "layer": cfg.layer,
             "tokens": cfg.tokens, "image_size": cfg.image_size, "dtype": cfg.dtype, "n_samples": n_samples}
    model_dtype = _model_dtype(cfg)
    if model_dtype != "float32":  # only then: float32 stores written before this option keep their folders
        ident["model_dtype"] = model_dtype
    if cfg.fast_decode:
        ident["fast_decode"] = True
    slug = f"{_slug(canonical_spec(cfg.model))}-{cfg.layer}-{cfg.tokens}"
    return Path(cfg.data_root) / "stores" / folder_id(slug, ident, "activation_store")


def _is_complete(store_dpath: Path, d: distributed.Dist) -> bool:
    """Whether a finished store is already there (every rank must take the same branch)."""
    reused = False
    if (store_dpath / "manifest.json").exists():
        with contextlib.suppress(Exception):
            reused = bool(ActivationStore(store_dpath, allow_incomplete=True).manifest.get("complete"))
    if d.enabled:
        reused = all(int(a[0]) for a in distributed.all_gather_arrays(np.array([int(reused)], dtype=np.int64)))
        distributed.barrier()
    return reused


Writer = StoreWriter | RankStoreWriter


def _run(cfg: ExtractConfig, dataset: PreparedDataset, extractor: MultiLayerExtractor, writers: list[Writer],
         first: int, stop: int) -> None:
    """Forward samples [min next_sample, stop) of the slice [first, stop), one shard at a time per
    store; a store that already holds a batch's samples (resumed further) skips them."""
    start = min(w.next_sample for w in writers)
    rank = distributed.current()
    desc = f"extract {cfg.layer}" + (f" [rank {rank.rank}]" if rank.enabled else "")
    bar = progress(total=stop - first, initial=start - first, desc=desc, unit="img")
    pending: list[tuple[list[torch.Tensor], list[np.ndarray]]] = [([], []) for _ in writers]
    for batch, sample_ids in _loader(cfg, dataset, extractor, start, stop):
        acts = [a.to("cpu") for a in extractor.activations(batch)]
        if extractor.generates_images:
            _write_thumbs(writers[0].dpath / GENERATED_THUMBS, sample_ids.tolist(), extractor.generated_images() or [])
        for writer, (layer_acts, layer_ids), a in zip(writers, pending, acts):
            if int(sample_ids[0]) < writer.next_sample:  # batches never straddle a shard boundary
                continue  # this store was resumed past the batch
            layer_acts.append(a)
            layer_ids.append(sample_ids.numpy())
            if sum(len(ids) for ids in layer_ids) >= cfg.shard_samples:
                writer.append(torch.cat(layer_acts), np.concatenate(layer_ids))
                layer_acts.clear()
                layer_ids.clear()
        bar.update(len(sample_ids))
    for writer, (layer_acts, layer_ids) in zip(writers, pending):
        if layer_ids:
            writer.append(torch.cat(layer_acts), np.concatenate(layer_ids))
    bar.close()


def _write_thumbs(dpath: Path, sample_ids: list[int], images: list) -> None:
    """Keep the images a model drew (FLUX) as the samples' thumbnails, before their shard lands."""
    if len(images) != len(sample_ids):
        raise ConfigError(f"the model returned {len(images)} images for {len(sample_ids)} samples")
    for sample_id, image in zip(sample_ids, images):
        atomic_write_bytes(dpath / f"{sample_id}.webp", thumbnail_webp(image))


class _SampleDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: PreparedDataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        sample_id = self.start + i
        return self.dataset.source.load(self.dataset.kept[sample_id]), sample_id


def _loader(cfg: ExtractConfig, dataset: PreparedDataset, extractor, start: int, stop: int):
    """Batches aligned to shard boundaries so a shard never mixes two runs' samples."""
    def collate(items):
        inputs, ids = zip(*items)
        return extractor.prepare(list(inputs)), torch.tensor(ids, dtype=torch.int64)

    batch = min(cfg.batch_size, cfg.shard_samples)
    if cfg.shard_samples % batch:
        batch = next(b for b in range(batch, 0, -1) if cfg.shard_samples % b == 0)
    return torch.utils.data.DataLoader(_SampleDataset(dataset, start, stop), batch_size=batch, shuffle=False,
                                       num_workers=_workers(cfg), collate_fn=collate)


def _workers(cfg: ExtractConfig) -> int:
    """Decoding must keep up with a GPU (~226 JPEGs/s per core against ~2,000 img/s for ViT-L/14)."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    if torch.device(distributed.pick_device(cfg.device)).type != "cuda":
        return 0
    return max(1, min(16, (os.cpu_count() or 2) - 1) // max(1, distributed.current().world))


def _record_image_size(store_dpath: Path, cfg: ExtractConfig) -> None:
    """Stores written before schema 5 lack `image_size`; the reused config says what it was (its
    identity includes it), so record it for the live worker, which must resize the same way."""
    fpath = store_dpath / "manifest.json"
    manifest = json.loads(fpath.read_text())
    if "image_size" not in manifest and cfg.image_size:
        atomic_write_json(fpath, {**manifest, "image_size": cfg.image_size})


def _slug(model: str) -> str:
    return model.split(":", 1)[-1].rstrip("/").split("/")[-1]

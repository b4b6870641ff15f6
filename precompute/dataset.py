"""Materialise a dataset folder: samples.parquet, 160 px WebP thumbnails and a manifest.

Done once per source; stores and indexes refer to it by `dataset_id`. Unreadable images are
skipped, counted and listed, and never get a sample id.
"""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, UnidentifiedImageError

from precompute.sources import Source, open_source
from sae_core.contract import SCHEMA_VERSION, atomic_write_bytes, atomic_write_json, folder_id, read_manifest
from sae_core.errors import DataError, FormatError
from sae_core.progress import progress
from sae_core.validate import is_count, short_repr

THUMB_PX = 160
THUMB_WORKER_MIN = 256
"""Below this many images, starting decoding processes costs more than it saves."""


@dataclass(frozen=True)
class DatasetConfig:
    source: str = field(default="emoji", metadata={"help": "image folder, table, text:FILE or emoji"})
    out: str = field(default="data/datasets", metadata={"help": "folder that dataset folders are created in"})
    image_col: str = field(default="image", metadata={"help": "table column with image paths"})
    caption_col: str = field(default="caption", metadata={"help": "table column with captions"})
    label_col: str = field(default="label", metadata={"help": "table column with labels"})
    thumb_px: int = field(default=THUMB_PX, metadata={"help": "thumbnail size (longest side)"})
    num_workers: int = field(default=-1, metadata={"help": "processes decoding images into thumbnails (-1: min(cores - 1, 8) "
                                                          f"for {THUMB_WORKER_MIN}+ images, else 0)"})


@dataclass
class PreparedDataset:
    dpath: Path
    manifest: dict
    source: Source
    kept: list[int]
    """Indices into source.records of the samples that got ids (sample_id = position here)."""


def open_dataset_source(cfg: DatasetConfig) -> Source:
    """The source listed but not yet decoded: its modality is known before any thumbnail is made."""
    return open_source(cfg.source, **_table_kwargs(cfg))


def prepare_dataset(cfg: DatasetConfig, source: Source | None = None) -> PreparedDataset:
    """Build (or reuse) the dataset folder for cfg.source (`source`: already opened by `open_dataset_source`)."""
    source = source if source is not None else open_dataset_source(cfg)
    fingerprint = source.fingerprint()
    ident = {"source": source.name, "fingerprint": fingerprint, "thumb_px": cfg.thumb_px}
    dpath = Path(cfg.out) / folder_id(Path(source.name).name or "dataset", ident, "dataset")
    if (dpath / "manifest.json").exists():
        try:
            manifest = read_dataset_manifest(dpath)
            kept = pq.read_table(dpath / "samples.parquet", columns=["source_index"]).column(0).to_pylist()
            return PreparedDataset(dpath, manifest, source, kept)
        except (FormatError, OSError, pa.ArrowException):
            pass  # a damaged dataset folder is rebuilt from its source (same id, same contents)

    rows: dict[str, list] = {k: [] for k in ("sample_id", "source", "caption", "label", "width", "height", "source_index")}
    skipped: list[str] = []
    (dpath / "thumbs").mkdir(parents=True, exist_ok=True)
    for i, thumb, width, height in _thumbnails(source, cfg.thumb_px, cfg.num_workers):
        rec = source.records[i]
        if source.modality == "image":
            if thumb is None:
                skipped.append(rec.source)
                continue
            atomic_write_bytes(dpath / "thumbs" / f"{len(rows['sample_id'])}.webp", thumb)
        sid = len(rows["sample_id"])
        for key, value in (("sample_id", sid), ("source", rec.source), ("caption", rec.caption), ("label", rec.label),
                           ("width", width), ("height", height), ("source_index", i)):
            rows[key].append(value)
    if not rows["sample_id"]:
        raise DataError(f"{cfg.source}: no readable samples ({len(skipped)} skipped)")
    schema = pa.schema([("sample_id", pa.int64()), ("source", pa.string()), ("caption", pa.string()), ("label", pa.string()),
                        ("width", pa.int32()), ("height", pa.int32()), ("source_index", pa.int64())])
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(rows, schema=schema), buf)
    atomic_write_bytes(dpath / "samples.parquet", buf.getvalue().to_pybytes())
    manifest = {
        "schema_version": SCHEMA_VERSION, "kind": "dataset", "dataset_id": dpath.name, "source": source.name,
        "modality": source.modality, "n_samples": len(rows["sample_id"]), "fingerprint": fingerprint,
        "n_skipped": len(skipped), "skipped": skipped[:1000], "has_labels": any(v is not None for v in rows["label"]),
    }
    atomic_write_json(dpath / "manifest.json", manifest)
    return PreparedDataset(dpath, manifest, source, rows["source_index"])


class _Thumbnails(torch.utils.data.Dataset):
    """(index, WebP thumbnail or None when unreadable, original width, height) per record, made
    where the image is decoded; JPEGs decode at the smallest DCT scale still >= the thumbnail."""

    def __init__(self, source: Source, px: int) -> None:
        self.source, self.px = copy.copy(source), px
        self.source.draft_side = px  # a copy: extraction's own decode scale is left alone

    def __len__(self) -> int:
        return len(self.source.records)

    def __getitem__(self, i: int) -> tuple[int, bytes | None, int | None, int | None]:
        if self.source.modality != "image":
            return i, None, None, None
        try:
            image = self.source.load(i)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return i, None, None, None
        width, height = image.info.get("original_size", image.size)
        return i, thumbnail_webp(image, self.px), width, height


def _thumbnails(source: Source, px: int, num_workers: int):
    """Thumbnails in record order, made by `num_workers` decoding processes (-1: auto)."""
    n = len(source.records)
    if num_workers < 0:
        num_workers = min(8, (os.cpu_count() or 2) - 1) if source.modality == "image" and n >= THUMB_WORKER_MIN else 0
    loader = torch.utils.data.DataLoader(_Thumbnails(source, px), batch_size=16, num_workers=num_workers, collate_fn=list)
    bar = progress(total=n, desc="dataset", unit="img")
    for batch in loader:
        yield from batch
        bar.update(len(batch))
    bar.close()


def thumbnail_webp(image: Image.Image, px: int = THUMB_PX) -> bytes:
    """The explorer's thumbnail: longest side `px`, WebP."""
    thumb = image.convert("RGB")
    thumb.thumbnail((px, px))
    buf = io.BytesIO()
    thumb.save(buf, format="WEBP", quality=85)
    return buf.getvalue()


def _table_kwargs(cfg: DatasetConfig) -> dict:
    """Column flags for tables, `save_to_disk` folders and cached hub datasets (`open_source`
    hands them only to those sources)."""
    return {"image_col": cfg.image_col, "caption_col": cfg.caption_col, "label_col": cfg.label_col}


_DATASET_KEYS = {"source": str, "modality": str, "n_samples": int, "n_skipped": int, "has_labels": bool}


def _check_dataset(m: dict, fpath: Path) -> None:
    """The dataset keys shown here, typed as docs/data-contract.md says (bool is an int to Python)."""
    for key, want in _DATASET_KEYS.items():
        value = m.get(key)
        if not (is_count(value) if want is int else isinstance(value, want)):
            found = "it is missing" if key not in m else f"found {short_repr(value)}"
            kind = {str: "a string", int: "an integer >= 0", bool: "true or false"}[want]
            raise FormatError(f"{fpath}: {key!r} must be {kind}, {found}; re-run `saescope extract` to rebuild the dataset folder")


def read_dataset_manifest(dpath: Path) -> dict:
    """A dataset folder's manifest, checked (kind, version, and the keys readers use)."""
    m = read_manifest(Path(dpath) / "manifest.json", "dataset")
    _check_dataset(m, Path(dpath) / "manifest.json")
    return m

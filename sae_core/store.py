"""The activation store: sharded safetensors + manifest.json (docs/data-contract.md).

`StoreWriter` appends shards atomically and rewrites the manifest after each, so a killed
extraction resumes after the last complete shard. Under torchrun each rank writes its own slice
with a `RankStoreWriter` (own shard names, own progress record) and rank 0 joins the parts into
the manifest with `StoreWriter.finish_parts`. `ActivationStore` memory-maps shards, so stores
larger than RAM can be trained on and indexed.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_save

from sae_core.contract import SCHEMA_VERSION, atomic_write_bytes, atomic_write_json, portable_path, read_manifest, sha256_file
from sae_core.errors import DataError, FormatError
from sae_core.validate import is_count, short_repr

MANIFEST = "manifest.json"
PART_KIND = "activation_store_part"
_HEADER_KEYS = ("d_in", "dtype", "tokens_per_sample", "model", "layer")
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_NP_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}


def _mmap_safetensors(fpath: Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file as a numpy array (bf16 as raw uint16).

    The header length is checked against the file size and the header's shape before anything is
    read or mapped, so a damaged or foreign file is a one-line FormatError, not a MemoryError."""
    def bad(why: str) -> FormatError:
        return FormatError(f"{fpath}: not a readable safetensors file ({why}); re-run `saescope extract` to rewrite it")

    try:
        size = fpath.stat().st_size
        with open(fpath, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, too short for a header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise bad(f"header length {header_len} exceeds the file size {size}")
            header = json.loads(f.read(header_len))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(str(e)) from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")
    data_size = size - 8 - header_len
    arrays = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        if not (isinstance(meta, dict) and isinstance(meta.get("dtype"), str) and isinstance(meta.get("shape"), list)
                and isinstance(offsets, list) and len(offsets) == 2 and all(is_count(v) for v in [*meta["shape"], *offsets])):
            raise bad(f"tensor {name!r} lacks a valid dtype, shape or data_offsets")
        dtype = _ST_DTYPES.get(meta["dtype"])
        if dtype is None:
            raise FormatError(f"{fpath}: tensor {name} has unsupported dtype {meta['dtype']}; re-run `saescope extract` to rewrite it")
        (start, end), shape = offsets, tuple(meta["shape"])
        count = int(np.prod(shape)) if shape else 1
        if start > end or end - start != count * np.dtype(dtype).itemsize or end > data_size:
            raise FormatError(f"{fpath}: tensor {name} is truncated or corrupt; re-run `saescope extract` to rewrite it")
        if count == 0:
            arrays[name] = np.zeros(shape, dtype=dtype)
            continue
        arrays[name] = np.memmap(fpath, dtype=dtype, mode="r", offset=8 + header_len + start, shape=shape)
    return arrays


def _check_manifest(m: dict, fpath: Path) -> None:
    """Check the keys readers rely on against docs/data-contract.md once, up front, so a hand-edited
    or damaged manifest is a one-line FormatError instead of a KeyError deep in training or indexing."""
    fix = "fix it, or delete the store folder and re-run `saescope extract`"

    def need(key: str, ok: bool, want: str) -> None:
        if not ok:
            found = "it is missing" if key not in m else f"found {short_repr(m[key])}"
            raise FormatError(f"{fpath}: {key!r} must be {want}, {found}; {fix}")

    need("d_in", is_count(m.get("d_in"), 1), "a positive integer")
    need("tokens_per_sample", is_count(m.get("tokens_per_sample"), 1), "a positive integer")
    need("dtype", m.get("dtype") in _TORCH_DTYPES, f"one of {', '.join(_TORCH_DTYPES)}")
    grid = m.get("grid")
    need("grid", grid is None or (isinstance(grid, list) and len(grid) == 2 and all(is_count(g, 1) for g in grid)
                                  and grid[0] * grid[1] == m["tokens_per_sample"]),
         f"null or [h, w] with h*w == tokens_per_sample ({m['tokens_per_sample']})")
    for key in ("store_id", "dataset_dpath", "thumbs_dpath"):
        need(key, m.get(key) is None or isinstance(m[key], str), "a string")
    need("shards", isinstance(m.get("shards"), list), "a list of shard objects")
    for i, e in enumerate(m["shards"]):
        if not (isinstance(e, dict) and isinstance(e.get("file"), str) and e["file"]
                and is_count(e.get("n_samples")) and is_count(e.get("first_sample"))):
            raise FormatError(f"{fpath}: shards[{i}] must be an object with \"file\" (a string), \"n_samples\" and "
                              f"\"first_sample\" (integers >= 0), found {short_repr(e)}; {fix}")
        if not (e.get("bytes") is None or is_count(e["bytes"])) or not (e.get("sha256") is None or _is_sha256(e["sha256"])):
            raise FormatError(f"{fpath}: shards[{i}] \"bytes\" must be an integer >= 0 and \"sha256\" 64 hex digits, "
                              f"found {short_repr(e)}; {fix}")


def _is_sha256(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _open_shard(dpath: Path, entry: dict, m: dict) -> tuple[np.ndarray, np.ndarray]:
    """Map one listed shard (acts, sample_ids) and check it against its manifest entry. Cheap (only
    the sample ids are read) and it catches a damaged shard or one from another store before it
    feeds wrong rows to training or indexing."""
    fpath = dpath / entry["file"]
    fix = "re-run `saescope extract` to rewrite it"
    arrays = _mmap_safetensors(fpath)
    acts, ids = arrays.get("acts"), arrays.get("sample_ids")
    if acts is None or ids is None:
        raise FormatError(f"{fpath}: shard lacks 'acts' or 'sample_ids'; {fix}")
    if acts.ndim != 2 or acts.shape[1] != m["d_in"]:
        raise FormatError(f"{fpath}: acts shape {acts.shape} does not match d_in={m['d_in']}; {fix}")
    if acts.dtype != _NP_DTYPES[m["dtype"]]:
        raise FormatError(f"{fpath}: acts are not stored as {m['dtype']}, the store's dtype; {fix}")
    T = m["tokens_per_sample"]
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise FormatError(f"{fpath}: sample_ids must be a 1-D int64 tensor, found {ids.dtype} {ids.shape}; {fix}")
    if len(ids) != entry["n_samples"]:
        raise FormatError(f"{fpath}: holds {len(ids)} samples but manifest.json lists {entry['n_samples']}; {fix}")
    if acts.shape[0] != len(ids) * T:
        raise FormatError(f"{fpath}: {acts.shape[0]} activation rows are not {len(ids)} samples x tokens_per_sample={T}; {fix}")
    if len(ids) and ids.min() < 0:
        raise DataError(f"{fpath}: negative sample_id {int(ids.min())} (ids index the dataset, 0..n_samples-1); {fix}")
    if entry.get("bytes") is not None and fpath.stat().st_size != entry["bytes"]:  # last: the checks above say more
        raise FormatError(f"{fpath}: {fpath.stat().st_size} bytes but manifest.json lists {entry['bytes']} (truncated or replaced); {fix}")
    return acts, ids


def _to_tensor(arr: np.ndarray, dtype: str, as_float: bool = True) -> torch.Tensor:
    """Stored rows as a tensor: float32, or in the store's own dtype (bf16 is kept as raw uint16)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t.float() if as_float else t


@dataclass
class _Shard:
    acts: np.ndarray
    sample_ids: np.ndarray
    first_row: int


class ActivationStore:
    """Read-only view of a store folder: rows are tokens, `T` rows per sample."""

    def __init__(self, dpath: str | Path, allow_incomplete: bool = False):
        """`allow_incomplete`: also open a store whose extraction has not finished (inspection only;
        training or indexing a partial store would silently use part of the data)."""
        self.dpath = Path(dpath)
        self.manifest = read_manifest(self.dpath / MANIFEST, "activation_store")
        m = self.manifest
        _check_manifest(m, self.dpath / MANIFEST)
        if not m.get("complete") and not allow_incomplete:
            raise DataError(f"{self.dpath}: extraction has not finished ({m.get('n_samples', 0)} samples so far); "
                            "re-run the same `saescope extract` command to complete it")
        self.d_in: int = m["d_in"]
        self.dtype: str = m["dtype"]
        self.tokens_per_sample: int = m["tokens_per_sample"]
        self.grid: tuple[int, int] | None = tuple(m["grid"]) if m.get("grid") else None
        self.shards: list[_Shard] = []
        row = 0
        for entry in m["shards"]:
            acts, ids = _open_shard(self.dpath, entry, m)
            self.shards.append(_Shard(acts, ids, row))
            row += acts.shape[0]
        self.n_tokens = row
        self.n_samples = row // self.tokens_per_sample
        self._starts = np.array([s.first_row for s in self.shards] + [row], dtype=np.int64)
        if self.n_tokens == 0:
            raise DataError(f"{self.dpath}: the activation store is empty; run `saescope extract` again")

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def store_id(self) -> str:
        return self.manifest.get("store_id", self.dpath.name)

    def rows(self, index: np.ndarray | torch.Tensor, stored_dtype: bool = False) -> torch.Tensor:
        """Rows [len(index), d_in] for arbitrary token indices (read in sorted order): float32, or
        with `stored_dtype` the store's own dtype (fewer bytes to move; the GPU converts)."""
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        sorted_idx = index[order]
        shard_of = np.searchsorted(self._starts, sorted_idx, side="right") - 1
        out = np.empty((len(index), self.d_in), dtype=_NP_DTYPES[self.dtype] if stored_dtype else np.float32)
        for s in np.unique(shard_of):
            sel = shard_of == s
            shard = self.shards[s]
            local = sorted_idx[sel] - shard.first_row
            out[order[sel]] = shard.acts[local] if stored_dtype else _to_tensor(shard.acts[local], self.dtype).numpy()
        return _to_tensor(out, self.dtype, as_float=False) if stored_dtype else torch.from_numpy(out)

    def iter_chunks(self, n_rows: int = 65536, start_row: int = 0, end_row: int | None = None, stored_dtype: bool = False):
        """Yield (first_row, acts [n, d_in]) in store order: the scan path of indexing.

        Contiguous slices of the memory-mapped shards, copied once. float32 by default; with
        `stored_dtype` in the store's own dtype (half the bytes of a bf16 store to move to a GPU,
        which converts faster than the host)."""
        end_row = self.n_tokens if end_row is None else end_row
        row = start_row
        while row < end_row:
            stop = min(row + n_rows, end_row)
            yield row, self._slice(row, stop, stored_dtype)
            row = stop

    def _slice(self, start: int, stop: int, stored_dtype: bool) -> torch.Tensor:
        parts = []
        s = int(np.searchsorted(self._starts, start, side="right") - 1)
        while start < stop:
            shard = self.shards[s]
            end = min(stop, shard.first_row + shard.acts.shape[0])
            parts.append(shard.acts[start - shard.first_row : end - shard.first_row])
            start, s = end, s + 1
        arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return _to_tensor(np.array(arr), self.dtype, as_float=not stored_dtype)  # one copy out of the mapped file

    def sample_ids(self) -> np.ndarray:
        """Dataset sample_id of every stored sample, in store order."""
        return np.concatenate([np.asarray(s.sample_ids) for s in self.shards]) if self.shards else np.zeros(0, np.int64)

    def summary(self) -> dict:
        m = self.manifest
        keys = ("store_id", "dataset_id", "model", "layer", "token_selection", "grid", "d_in", "tokens_per_sample")
        return {k: m.get(k) for k in keys} | {"dpath": str(self.dpath.resolve())}


class StoreWriter:
    """Append shards to a store folder; resumable and atomic per shard."""

    def __init__(self, dpath: str | Path, header: dict):
        """`header`: manifest fields other than shard bookkeeping (model, layer, d_in, dtype, ...)."""
        self.dpath = Path(dpath)
        self.dpath.mkdir(parents=True, exist_ok=True)
        if header.get("dtype") not in _TORCH_DTYPES:
            raise FormatError(f"dtype={header.get('dtype')!r}; choose one of {', '.join(_TORCH_DTYPES)}")
        if header.get("dataset_dpath") and Path(header["dataset_dpath"]).is_absolute():
            header = {**header, "dataset_dpath": portable_path(header["dataset_dpath"], self.dpath)}
        existing = self.dpath / MANIFEST
        if existing.exists():
            self.manifest = read_manifest(existing, "activation_store")
            _check_manifest(self.manifest, existing)
            for key in ("d_in", "dtype", "tokens_per_sample", "model", "layer"):
                if key in header and self.manifest.get(key) != header[key]:
                    raise FormatError(f"{existing}: existing store has {key}={self.manifest.get(key)!r}, not {header[key]!r}")
            self._drop_unreadable_shards()
        else:
            self.manifest = {
                **header,
                "schema_version": SCHEMA_VERSION,
                "kind": "activation_store",
                "store_id": self.dpath.name,
                "shards": [],
                "n_samples": 0,
                "n_tokens": 0,
                "complete": False,
            }
            self._write_manifest()

    def _drop_unreadable_shards(self) -> None:
        """Keep the listed shards up to the first one that is missing or damaged, so re-running
        the extraction rewrites it and everything after it instead of trusting a broken store."""
        shards = self.manifest["shards"]
        for i, entry in enumerate(shards):
            try:
                _open_shard(self.dpath, entry, self.manifest)  # the reader's checks: what it refuses is redone
                if i == len(shards) - 1 and not self.complete:  # after a crash: the last shard written, byte for byte
                    _check_checksum(self.dpath, entry)
            except (FormatError, DataError, OSError):
                T = int(self.manifest["tokens_per_sample"])
                self.manifest.update(shards=shards[:i], n_samples=entry["first_sample"], complete=False)
                self.manifest["n_tokens"] = self.manifest["n_samples"] * T
                self._write_manifest()
                return

    @property
    def n_samples_done(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def next_sample(self) -> int:
        """Position (in store order) of the next sample to write."""
        return self.n_samples_done

    def append(self, acts: torch.Tensor, sample_ids: torch.Tensor | np.ndarray) -> None:
        """acts [n_samples, T, d_in] (or [n_samples * T, d_in]) for n_samples samples."""
        fname = f"shard-{len(self.manifest['shards']):05d}.safetensors"
        n, sums = _write_shard(self.dpath / fname, self.manifest, acts, sample_ids)
        self.manifest["shards"].append({"file": fname, "n_samples": n, "first_sample": self.n_samples_done, **sums})
        self.manifest["n_samples"] += n
        self.manifest["n_tokens"] = self.manifest["n_samples"] * int(self.manifest["tokens_per_sample"])
        self._write_manifest()

    def finish_parts(self, world: int, **extra) -> None:
        """Rank 0, after every rank finished its `RankStoreWriter`: list all parts' shards in sample order."""
        shards, n = [], 0
        for rank in range(world):
            fpath = self.dpath / part_fname(rank)
            part = read_manifest(fpath, PART_KIND)
            if not part.get("complete") or part.get("world_size") != world or part.get("first_sample") != n:
                raise DataError(f"{fpath}: rank {rank} did not finish its slice; re-run the extraction to resume")
            for entry in part["shards"]:
                shards.append({**entry, "first_sample": n})
                n += int(entry["n_samples"])
            if n != part["stop_sample"]:
                raise DataError(f"{fpath}: rank {rank} wrote {n - part['first_sample']} samples, not {part['stop_sample'] - part['first_sample']}")
        self.manifest.update(shards=shards, n_samples=n, n_tokens=n * int(self.manifest["tokens_per_sample"]))
        self.finish(**extra)

    def finish(self, **extra) -> None:
        """Mark the store complete, then delete files no longer listed (earlier runs' shards, parts' progress)."""
        self.manifest.update(extra)
        self.manifest["complete"] = True
        self._write_manifest()
        listed = {entry["file"] for entry in self.manifest["shards"]}
        stale = [*self.dpath.glob("shard-*.safetensors"), *self.dpath.glob(".shard-*.tmp"), *self.dpath.glob("progress-r*.json")]
        for fpath in stale:
            if fpath.name not in listed:
                fpath.unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        atomic_write_json(self.dpath / MANIFEST, self.manifest)


def part_fname(rank: int) -> str:
    return f"progress-r{rank:02d}.json"


def _check_checksum(dpath: Path, entry: dict) -> None:
    """A listed shard's bytes against the SHA-256 its manifest entry records (if any)."""
    want = entry.get("sha256")
    if want is not None and sha256_file(dpath / entry["file"]) != want:
        raise FormatError(f"{dpath / entry['file']}: checksum mismatch (the file changed after it was written); "
                          "re-run `saescope extract` to rewrite it")


def verify_store(dpath: str | Path) -> str:
    """`saescope verify` of a store: every check of opening it, then each shard's SHA-256 against
    its manifest entry. Returns a one-line summary; the first damaged shard is a FormatError."""
    from sae_core.progress import progress

    store = ActivationStore(dpath, allow_incomplete=True)
    entries = store.manifest["shards"]
    with progress(total=len(entries), desc="verify", unit="shard") as bar:
        for entry in entries:
            _check_checksum(store.dpath, entry)
            bar.update(1)
    n_sums = sum(e.get("sha256") is not None for e in entries)
    state = "complete" if store.manifest.get("complete") else "extraction not finished"
    return (f"activation store {store.dpath}: ok ({len(entries)} shards, {n_sums} checksums verified"
            f"{', sizes only for the rest' if n_sums < len(entries) else ''}; {state})")


def _write_shard(fpath: Path, header: dict, acts: torch.Tensor, sample_ids) -> tuple[int, dict]:
    """Write one shard atomically; returns its number of samples and its `bytes`/`sha256` record."""
    T, d_in = int(header["tokens_per_sample"]), int(header["d_in"])
    sample_ids = torch.as_tensor(sample_ids).to("cpu", torch.int64)
    acts = acts.reshape(-1, d_in)
    if acts.shape[0] != len(sample_ids) * T:
        raise DataError(f"{acts.shape[0]} activation rows for {len(sample_ids)} samples x {T} tokens")
    tensors = {"acts": acts.to(_TORCH_DTYPES[header["dtype"]]).contiguous(), "sample_ids": sample_ids.contiguous()}
    data = safetensors_save(tensors)
    atomic_write_bytes(fpath, data)
    return len(sample_ids), {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class RankStoreWriter:
    """One torchrun rank's slice [first_sample, stop_sample) of a store: shards `shard-rRR-NNNNN.safetensors`
    and the progress record `progress-rRR.json`, rewritten after each shard so the rank resumes on its own.

    A record left by a run with another slice, world size or header is discarded (the rank starts its
    slice over). Readers never see parts: rank 0 lists them in manifest.json once all are complete.
    """

    def __init__(self, dpath: str | Path, header: dict, rank: int, world: int, first_sample: int, stop_sample: int):
        self.dpath = Path(dpath)
        self.dpath.mkdir(parents=True, exist_ok=True)
        if header.get("dtype") not in _TORCH_DTYPES:
            raise FormatError(f"dtype={header.get('dtype')!r}; choose one of {', '.join(_TORCH_DTYPES)}")
        self.rank, self.first_sample, self.stop_sample = rank, first_sample, stop_sample
        self.fpath = self.dpath / part_fname(rank)
        fresh = {
            **{k: header.get(k) for k in _HEADER_KEYS}, "schema_version": SCHEMA_VERSION, "kind": PART_KIND, "rank": rank,
            "world_size": world, "first_sample": first_sample, "stop_sample": stop_sample, "shards": [], "n_samples": 0,
            "complete": False,
        }
        self.record = fresh
        if self.fpath.exists():
            try:
                old = read_manifest(self.fpath, PART_KIND)
            except FormatError:
                old = None
            same = old is not None and all(old.get(k) == v for k, v in fresh.items() if k not in ("shards", "n_samples", "complete"))
            if same and all((self.dpath / e["file"]).is_file() for e in old["shards"]):
                self.record = old
        self._write()

    @property
    def next_sample(self) -> int:
        return self.first_sample + int(self.record["n_samples"])

    def append(self, acts: torch.Tensor, sample_ids: torch.Tensor | np.ndarray) -> None:
        fname = f"shard-r{self.rank:02d}-{len(self.record['shards']):05d}.safetensors"
        n, sums = _write_shard(self.dpath / fname, self.record, acts, sample_ids)
        if self.next_sample + n > self.stop_sample:
            raise DataError(f"rank {self.rank} wrote past the end of its slice ({self.stop_sample})")
        self.record["shards"].append({"file": fname, "n_samples": n, **sums})
        self.record["n_samples"] += n
        self._write()

    def finish(self) -> None:
        if self.next_sample != self.stop_sample:
            raise DataError(f"rank {self.rank} stopped at sample {self.next_sample}, before {self.stop_sample}")
        self.record["complete"] = True
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.fpath, self.record)

"""Map points as binary columns: `[u32 header length][JSON header, space-padded][8-byte aligned columns]`.

x, y are float32; cluster ids int16 (int32 when needed); colour channels are uint8 quantised
between the header's min and max (13 bytes a feature, so 65k features < 1 MB, 1M < 16 MB).
Row i is feature/sample i when ids are dense; otherwise an `id` int32/int64 column is added.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from app.db import Index


def _quantise(v: np.ndarray) -> tuple[np.ndarray, float, float]:
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(len(v), np.uint8), 0.0, 0.0
    lo, hi = float(v[finite].min()), float(v[finite].max())
    span = hi - lo if hi > lo else 1.0
    q = np.where(finite, np.round((np.nan_to_num(v, nan=lo) - lo) / span * 254) + 1, 0)
    return q.astype(np.uint8), lo, hi  # 0 means missing


def encode(columns: list[tuple[str, np.ndarray, dict]], n: int, meta: dict) -> bytes:
    """Pack columns after a JSON header; offsets count from the data start (4 + header length)."""
    specs, offset = [], 0
    for name, arr, extra in columns:
        specs.append({"name": name, "dtype": str(arr.dtype), "offset": offset, **extra})
        offset += -(-arr.nbytes // 8) * 8
    raw = json.dumps({"n": n, **meta, "columns": specs}, separators=(",", ":")).encode()
    hlen = -(-(4 + len(raw)) // 8) * 8 - 4  # pad so the data section starts 8-byte aligned
    out = bytearray(struct.pack("<I", hlen) + raw.ljust(hlen, b" "))
    for s, (_, arr, _) in zip(specs, columns, strict=True):
        out.extend(b"\0" * (4 + hlen + s["offset"] - len(out)))
        out.extend(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
    return bytes(out)


def _ids_column(ids: np.ndarray) -> list[tuple[str, np.ndarray, dict]]:
    n = len(ids)
    if n == 0 or (ids[0] == 0 and ids[-1] == n - 1):
        return []
    dtype = np.int32 if ids.max() < 2**31 else np.int64
    return [("id", ids.astype(dtype), {})]


def _cluster_column(c: np.ndarray) -> np.ndarray:
    c = np.nan_to_num(c.astype(np.float64), nan=-1).astype(np.int64)
    dtype = np.int16 if (c.size == 0 or (c.max() < 2**15 and c.min() >= -(2**15))) else np.int32
    return c.astype(dtype)


def feature_points(db: Index, sae_id: str) -> bytes:
    res = db.cursor().execute(
        "SELECT feature_id, x, y, cluster_id, log10(CASE WHEN density > 0 THEN density END) AS log_density, "
        "max_act, label_entropy FROM features WHERE sae_id = ? ORDER BY feature_id", [sae_id]).fetchnumpy()
    ids = np.asarray(res["feature_id"], np.int64)
    cols = _ids_column(ids)
    cols += [("x", _f32(res["x"]), {}), ("y", _f32(res["y"]), {}),
             ("cluster", _cluster_column(_f64(res["cluster_id"])), {})]
    for name, key in [("density", "log_density"), ("max_act", "max_act"), ("entropy", "label_entropy")]:
        q, lo, hi = _quantise(_f64(res[key]))
        cols.append((name, q, {"min": lo, "max": hi, "quantised": True,
                               "log10": name == "density"}))
    return encode(cols, len(ids), {"kind": "features", "sae_id": sae_id})


def sample_points(db: Index, sae_id: str) -> bytes:
    res = db.cursor().execute("SELECT sample_id, x, y, cluster_id FROM sample_map WHERE sae_id = ? "
                              "ORDER BY sample_id", [sae_id]).fetchnumpy()
    ids = np.asarray(res["sample_id"], np.int64)
    cols = _ids_column(ids)
    cols += [("x", _f32(res["x"]), {}), ("y", _f32(res["y"]), {}),
             ("cluster", _cluster_column(_f64(res["cluster_id"])), {})]
    return encode(cols, len(ids), {"kind": "samples", "sae_id": sae_id})


def _f64(a) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(a).astype(np.float64), np.nan)


def _f32(a) -> np.ndarray:
    return _f64(a).astype(np.float32)


def decode(buf: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of `encode` (tests and the benchmark use it; the browser does the same in JS)."""
    (hlen,) = struct.unpack_from("<I", buf, 0)
    header = json.loads(buf[4:4 + hlen])
    cols = {}
    for s in header["columns"]:
        dt = np.dtype(s["dtype"]).newbyteorder("<")
        cols[s["name"]] = np.frombuffer(buf, dtype=dt, count=header["n"], offset=4 + hlen + s["offset"])
    return header, cols

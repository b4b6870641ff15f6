"""Datasets as the Hub ships them: Parquet with the images inside (bytes or `{bytes, path}`
structs, caption/label columns named by flags) and gzipped WebDataset shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from precompute.cli import main as cli_main
from precompute.extract import ExtractConfig, extract
from precompute.extractors.efficientnet import EfficientNetExtractor
from precompute.sources import open_source
from sae_core.store import ActivationStore


def _png(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def test_parquet_with_image_structs_and_named_columns(tmp_path):
    (tmp_path / "side.png").write_bytes(_png(9))
    images = [{"bytes": _png(0), "path": "a.png"}, {"bytes": None, "path": "side.png"}, {"bytes": b"not an image", "path": None},
              {"bytes": _png(3), "path": None}]
    table = pa.table({"img": images, "alt_text": ["red", "from a file", "broken", "blue"], "class": ["x", "y", "z", "x"]})
    pq.write_table(table, tmp_path / "train-00000.parquet")
    source = open_source(str(tmp_path / "train-00000.parquet"), image_col="img", caption_col="alt_text", label_col="class")
    assert [r.caption for r in source.records] == ["red", "from a file", "broken", "blue"]
    assert [r.source for r in source.records][0] == "train-00000.parquet#0"
    assert np.array_equal(_pixels(source.load(0)), _pixels(Image.open(io.BytesIO(_png(0)))))
    assert np.array_equal(_pixels(source.load(1)), _pixels(Image.open(tmp_path / "side.png")))
    with pytest.raises(OSError):
        source.load(2)

    result = extract(ExtractConfig(dataset=str(tmp_path / "train-00000.parquet"), image_col="img", caption_col="alt_text",
                                   label_col="class", layer="head", tokens="pooled", image_size=64, data_root=str(tmp_path / "data")))
    manifest = json.loads((result.dataset_dpath / "manifest.json").read_text())
    assert manifest["n_samples"] == 3 and manifest["n_skipped"] == 1 and manifest["has_labels"]
    samples = pq.read_table(result.dataset_dpath / "samples.parquet").to_pylist()
    assert [s["caption"] for s in samples] == ["red", "from a file", "blue"] and [s["width"] for s in samples] == [40, 40, 40]
    ex = EfficientNetExtractor("head", "pooled", image_size=64)
    expected = ex.activations(ex.prepare([source.load(i) for i in (0, 1, 3)]))[:, 0]
    torch.testing.assert_close(ActivationStore(result.store_dpath).rows(np.arange(3)), expected, atol=1e-5, rtol=1e-5)


def test_parquet_with_plain_binary_column(tmp_path):
    pq.write_table(pa.table({"image": [_png(i) for i in range(3)], "caption": ["a", "b", "c"]}), tmp_path / "t.parquet")
    source = open_source(str(tmp_path / "t.parquet"))
    assert np.array_equal(_pixels(source.load(2)), _pixels(Image.open(io.BytesIO(_png(2)))))


def test_parquet_missing_image_column_is_one_line(tmp_path, capsys):
    pq.write_table(pa.table({"picture": [_png(0)]}), tmp_path / "t.parquet")
    code = cli_main(["extract", "--dataset", str(tmp_path / "t.parquet"), "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "no column 'image'; columns are picture" in err and len(err.strip().splitlines()) == 1


def _shard(fpath, keys, gz: bool) -> None:
    with tarfile.open(fpath, "w:gz" if gz else "w") as tf:
        for key in keys:
            for ext, data in (("jpg", _png(int(key))), ("txt", f"caption {key}".encode()), ("cls", f"c{int(key) % 2}".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_gzipped_shards_read_like_plain_ones(tmp_path):
    for gz in (False, True):
        root = tmp_path / ("gz" if gz else "plain")
        root.mkdir()
        _shard(root / f"s-00000.tar{'.gz' if gz else ''}", ["000", "001", "002"], gz)
        _shard(root / f"s-00001.tar{'.gz' if gz else ''}", ["003", "004"], gz)
    plain = open_source(str(tmp_path / "plain" / "s-{00000..00001}.tar"))
    gzipped = open_source(str(tmp_path / "gz" / "s-{00000..00001}.tar.gz"))
    folder = open_source(str(tmp_path / "gz"))
    assert [r.caption for r in gzipped.records] == [f"caption {k:03d}" for k in range(5)]
    assert [r.label for r in folder.records] == ["c0", "c1", "c0", "c1", "c0"]
    for i in (0, 4, 2, 3):  # out of order too: the gzip stream rewinds
        assert np.array_equal(_pixels(gzipped.load(i)), _pixels(plain.load(i)))
        assert np.array_equal(_pixels(folder.load(i)), _pixels(Image.open(io.BytesIO(_png(i)))))


def _jpegs(root, n: int, size=(1024, 768)):
    root.mkdir()
    y, x = np.mgrid[0:size[1], 0:size[0]] / 64.0
    for i in range(n):  # smooth photo-like content, different per image
        rgb = np.stack([np.sin(x + i), np.cos(y - i), np.sin((x + y) / 2)], axis=-1)
        Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(root / f"{i:03d}.jpg", quality=90)
    (root / "zz-broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_thumbnails_from_decoding_workers_at_reduced_scale(tmp_path):
    """Workers decode JPEGs at a reduced DCT scale for thumbnails; sizes recorded are the originals."""
    from precompute.dataset import DatasetConfig, prepare_dataset

    folder = _jpegs(tmp_path / "jpegs", 5)
    built = [prepare_dataset(DatasetConfig(source=str(folder), out=str(tmp_path / f"w{w}"), num_workers=w)) for w in (0, 1)]
    for ds in built:
        samples = pq.read_table(ds.dpath / "samples.parquet").to_pylist()
        assert [(s["width"], s["height"]) for s in samples] == [(1024, 768)] * 5
        assert ds.manifest["n_skipped"] == 1 and ds.manifest["skipped"] == ["zz-broken.jpg"]
        assert Image.open(ds.dpath / "thumbs" / "4.webp").size == (160, 120)
    for i in range(5):  # in-process and worker-made thumbnails are the same bytes
        assert (built[0].dpath / "thumbs" / f"{i}.webp").read_bytes() == (built[1].dpath / "thumbs" / f"{i}.webp").read_bytes()
    thumb = np.asarray(Image.open(built[1].dpath / "thumbs" / "2.webp"), dtype=np.float32)
    full = Image.open(folder / "002.jpg").convert("RGB")
    full.thumbnail((160, 160))
    assert np.abs(thumb - np.asarray(full, dtype=np.float32)).mean() < 4  # close to a full-resolution thumbnail

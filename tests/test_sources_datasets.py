"""`datasets` datasets through `saescope extract`: a hub dataset by name from a local cache
(built here, never downloaded) and a `save_to_disk` folder; images as PIL or bytes, caption and
label columns by flag.

The cache is made the way `datasets` itself lays it out after an online `load_dataset`:
Parquet is prepared by the Parquet builder, then its Arrow files are placed under
`<cache>/owner___name/default/0.0.0/<hash>/` with the file names the hub loader gives them.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from precompute.cli import main as cli_main
from precompute.dataset import DatasetConfig, open_dataset_source, prepare_dataset
from precompute.sources import open_source
from precompute.sources_hf import parse_hub_dataset
from sae_core.errors import DataError

datasets = pytest.importorskip("datasets")

N = 6
CAPTIONS = [f"shape number {i}" for i in range(N)]
LABELS = ["circle", "square"]


def _images() -> list[Image.Image]:
    return [Image.fromarray(np.random.default_rng(i).integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)) for i in range(N)]


def _dataset() -> datasets.Dataset:
    features = datasets.Features({"picture": datasets.Image(), "alt_text": datasets.Value("string"),
                                  "kind": datasets.ClassLabel(names=LABELS)})
    return datasets.Dataset.from_dict({"picture": _images(), "alt_text": CAPTIONS, "kind": [i % 2 for i in range(N)]},
                                      features=features)


def _cache_by_name(cache: Path, repo: str, work: Path) -> None:
    """A hub dataset's cache entry for `repo`, prepared offline from a local Parquet file."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo.split("/")
    parquet = work / "train-00000.parquet"
    _dataset().to_parquet(str(parquet))
    builder = Parquet(cache_dir=str(work / "build"), dataset_name=name, data_files={"train": str(parquet)}, hash="0123abcd")
    builder.download_and_prepare()
    prepared = glob.glob(str(work / "build" / name / "*" / "0.0.0" / "0123abcd"))[0]
    shutil.copytree(prepared, cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123abcd")


@pytest.fixture()
def no_network(monkeypatch):
    """Any socket connection fails the test: the cache must be read without the network."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _extract(tmp_path, dataset: str, *flags: str) -> tuple[int, str]:
    return cli_main(["extract", "--dataset", dataset, "--model", "efficientnet-lite0", "--layer", "head", "--device", "cpu",
                     "--data-root", str(tmp_path / "data"), "--batch-size", "4", *flags])


def _samples(tmp_path) -> list[dict]:
    import pyarrow.parquet as pq

    (samples,) = (tmp_path / "data" / "datasets").glob("*/samples.parquet")
    return pq.read_table(samples).to_pylist()


def test_hub_dataset_by_name_from_the_cache(tmp_path, monkeypatch, no_network, capsys):
    cache = tmp_path / "hf-cache"
    _cache_by_name(cache, "someone/tiny-shapes", tmp_path / "work")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    assert _extract(tmp_path, "hf:someone/tiny-shapes", "--image-col", "picture", "--caption-col", "alt_text",
                    "--label-col", "kind") == 0, capsys.readouterr().err
    rows = _samples(tmp_path)
    assert [r["caption"] for r in rows] == CAPTIONS
    assert [r["label"] for r in rows] == [LABELS[i % 2] for i in range(N)]
    assert [(r["width"], r["height"]) for r in rows] == [(24, 20 + i) for i in range(N)]
    assert rows[0]["source"] == "hf:someone/tiny-shapes[train]#0"
    source = open_source("hf:someone/tiny-shapes:train", image_col="picture")
    np.testing.assert_array_equal(np.asarray(source.load(3)), np.asarray(_images()[3]))


def test_hub_dataset_missing_from_the_cache_is_one_line(tmp_path, monkeypatch, no_network, capsys):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    assert _extract(tmp_path, "hf:someone/not-cached") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(r"hf:someone/not-cached: not in the local datasets cache .*datasets\.load_dataset\('someone/not-cached'\)", err)
    assert not (tmp_path / "data").exists()


def test_unknown_split_and_bad_forms(tmp_path, monkeypatch, no_network):
    cache = tmp_path / "hf-cache"
    _cache_by_name(cache, "someone/tiny-shapes", tmp_path / "work")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    with pytest.raises(DataError, match=r"no split 'test' in the cache; cached splits: \['train'\]"):
        open_source("hf:someone/tiny-shapes:test")
    for bad in ("hf:", "hf:a/b/c", "hf:someone/tiny-shapes::train", "hf:x:y:z:w"):
        with pytest.raises(DataError, match="use hf:owner/name"):
            parse_hub_dataset(bad)
    assert parse_hub_dataset("hf:o/n:cfg:validation") == ("o/n", "cfg", "validation")


@pytest.mark.parametrize("as_bytes", [False, True])
def test_save_to_disk_folder_with_pil_or_bytes_images(tmp_path, as_bytes):
    ds = _dataset()
    if as_bytes:  # images stored as encoded bytes in a plain binary column
        import io

        def encode(im):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()

        ds = datasets.Dataset.from_dict({"picture": [encode(im) for im in _images()], "alt_text": CAPTIONS,
                                         "kind": [LABELS[i % 2] for i in range(N)]})
        ds = ds.cast_column("picture", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = DatasetConfig(source=str(tmp_path / "saved"), out=str(tmp_path / "out"), image_col="picture", caption_col="alt_text",
                        label_col="kind")
    prepared = prepare_dataset(cfg, open_dataset_source(cfg))
    manifest = json.loads((prepared.dpath / "manifest.json").read_text())
    assert manifest["n_samples"] == N
    import pyarrow.parquet as pq

    rows = pq.read_table(prepared.dpath / "samples.parquet").to_pylist()  # the column flags reach the folder's reader
    assert [(r["caption"], r["label"]) for r in rows] == [(c, LABELS[i % 2]) for i, c in enumerate(CAPTIONS)]
    source = open_source(str(tmp_path / "saved"), image_col="picture", caption_col="alt_text", label_col="kind")
    assert [r.caption for r in source.records] == CAPTIONS
    assert [r.label for r in source.records] == [LABELS[i % 2] for i in range(N)]
    np.testing.assert_array_equal(np.asarray(source.load(5)), np.asarray(_images()[5]))

"""Dataset sources on real files: WebDataset shards, HF save_to_disk folders, tables, image
folders and WordNet, through `open_source` and `prepare_dataset`."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from precompute.dataset import DatasetConfig, prepare_dataset
from precompute.sources import (
    HFDiskSource,
    ImageFolderSource,
    TableSource,
    WebDatasetSource,
    WordNetSource,
    expand_braces,
    open_source,
)
from sae_core.errors import DataError

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def _image_bytes(colour: str, fmt: str = "JPEG", size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_shards(dpath: Path, n_shards: int = 3, per_shard: int = 4, corrupt: str | None = None) -> list[tuple[str, str, str]]:
    """Shards `shards-0000N.tar` in WebDataset layout; returns (key, caption, label) in order."""
    dpath.mkdir(parents=True, exist_ok=True)
    expected = []
    for s in range(n_shards):
        with tarfile.open(dpath / f"shards-{s:05d}.tar", "w") as tf:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                colour = COLOURS[(s * per_shard + j) % len(COLOURS)]
                fmt, ext = (("PNG", "png") if j % 2 else ("JPEG", "jpg"))
                data = b"this is not an image" if key == corrupt else _image_bytes(colour, fmt)
                _add(tf, f"{key}.{ext}", data)
                _add(tf, f"{key}.txt", f"a {colour} rectangle".encode())
                _add(tf, f"{key}.cls", colour.encode())
                _add(tf, f"{key}.json", json.dumps({"key": key}).encode())
                expected.append((key, f"a {colour} rectangle", colour))
    return expected


def test_expand_braces():
    assert expand_braces("s-{00000..00002}.tar") == ["s-00000.tar", "s-00001.tar", "s-00002.tar"]
    assert expand_braces("s-{8..10}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar"]
    assert expand_braces("{a,b}/{0..1}.tar") == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_webdataset_shards_brace_folder_and_single(tmp_path):
    expected = _write_shards(tmp_path / "wds")
    src = open_source(str(tmp_path / "wds" / "shards-{00000..00002}.tar"))
    assert isinstance(src, WebDatasetSource) and src.modality == "image"
    assert [(Path(r.source).stem, r.caption, r.label) for r in src.records] == expected
    assert src.records[0].source == "shards-00000.tar/000000000.jpg"
    for i in (0, 5, 11, 3):  # random access reads the right member
        im = src.load(i)
        assert im.mode == "RGB" and im.size == (24, 16)
        want = Image.new("RGB", (1, 1), expected[i][2]).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(im.getpixel((12, 8)), want, strict=True)) < 12
    # a folder of shards and a single shard give the same records, in the same order
    assert open_source(str(tmp_path / "wds")).records == src.records
    single = open_source(str(tmp_path / "wds" / "shards-00001.tar"))
    assert [r.caption for r in single.records] == [c for _, c, _ in expected[4:8]]
    # survives pickling (data-loader workers) after file handles are open
    clone = pickle.loads(pickle.dumps(src))
    assert clone.load(7).size == (24, 16)
    with pytest.raises(DataError, match="not found"):
        open_source(str(tmp_path / "wds" / "shards-{00000..00005}.tar"))


def test_webdataset_corrupt_image_is_skipped(tmp_path):
    expected = _write_shards(tmp_path / "wds", n_shards=2, per_shard=3, corrupt="000010001")
    with tarfile.open(tmp_path / "wds" / "shards-00001.tar", "a") as tf:  # a key with a caption but no image
        _add(tf, "000019999.txt", b"orphan caption")
    prepared = prepare_dataset(DatasetConfig(source=str(tmp_path / "wds"), out=str(tmp_path / "datasets")))
    m = prepared.manifest
    assert m["n_samples"] == 5 and m["n_skipped"] == 2 and m["has_labels"]
    assert m["skipped"] == ["shards-00001.tar/000010001.png", "shards-00001.tar/000019999.missing-image"]
    rows = pq.read_table(prepared.dpath / "samples.parquet").to_pylist()
    kept = [e for e in expected if e[0] != "000010001"]
    assert [r["caption"] for r in rows] == [c for _, c, _ in kept]
    assert [r["label"] for r in rows] == [lb for _, _, lb in kept]
    assert [r["sample_id"] for r in rows] == list(range(5))
    assert all((prepared.dpath / "thumbs" / f"{i}.webp").is_file() for i in range(5))


def test_hf_save_to_disk_images_and_classlabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    n = 6
    names = ["cat", "dog", "bird"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "caption": datasets.Value("string")})
    rows = {"image": [Image.new("RGB", (20 + i, 10), COLOURS[i]) for i in range(n)], "label": [i % 3 for i in range(n)],
            "caption": [f"picture {i}" for i in range(n)]}
    rows["image"][2] = {"bytes": b"garbage bytes", "path": None}  # corrupt
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    src = open_source(str(tmp_path / "hf"))
    assert isinstance(src, HFDiskSource) and src.modality == "image"
    assert [r.label for r in src.records] == [names[i % 3] for i in range(n)]
    assert [r.caption for r in src.records] == [f"picture {i}" for i in range(n)]
    assert src.load(4).size == (24, 10) and src.load(4).mode == "RGB"
    prepared = prepare_dataset(DatasetConfig(source=str(tmp_path / "hf"), out=str(tmp_path / "datasets")))
    assert prepared.manifest["n_samples"] == n - 1 and prepared.manifest["skipped"] == ["hf#2"]

    # a DatasetDict uses its train split; a dataset without images is text
    text = datasets.Dataset.from_dict({"text": ["first line", "second line"], "labels": [1, 0]},
                                      features=datasets.Features({"text": datasets.Value("string"), "labels": datasets.ClassLabel(names=["neg", "pos"])}))
    datasets.DatasetDict({"test": text.select([0]), "train": text}).save_to_disk(str(tmp_path / "hfdict"))
    tsrc = open_source(str(tmp_path / "hfdict"))
    assert tsrc.modality == "text" and tsrc.split == "train"
    assert [(r.caption, r.label) for r in tsrc.records] == [("first line", "pos"), ("second line", "neg")]
    assert tsrc.load(1) == "second line"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_table_sources_with_relative_paths(tmp_path, fmt):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_image_bytes(COLOURS[i], "PNG"))
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    rows = [{"image": f"imgs/{i}.png", "caption": f"a {COLOURS[i]} square", "label": COLOURS[i]} for i in range(3)]
    rows.insert(1, {"image": "imgs/bad.png", "caption": "broken", "label": "none"})
    rows.append({"image": "imgs/missing.png", "caption": "missing", "label": "none"})
    table = tmp_path / "sub" / f"data.{fmt}"
    table.parent.mkdir()
    for r in rows:
        r["image"] = "../" + r["image"]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), table)
    elif fmt == "jsonl":
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        table.write_text(f"image{sep}caption{sep}label\n" + "".join(sep.join(r.values()) + "\n" for r in rows))
    src = open_source(str(table))
    assert isinstance(src, TableSource)
    assert [r.caption for r in src.records] == ["a red square", "broken", "a green square", "a blue square", "missing"]
    assert src.load(0).size == (24, 16)
    prepared = prepare_dataset(DatasetConfig(source=str(table), out=str(tmp_path / "datasets")))
    assert prepared.manifest["n_samples"] == 3 and prepared.manifest["n_skipped"] == 2
    assert pq.read_table(prepared.dpath / "samples.parquet").column("label").to_pylist() == ["red", "green", "blue"]


def test_image_folder_with_subfolder_labels(tmp_path):
    for label in ("cats", "dogs"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "imgs" / label / f"{i}.jpg").write_bytes(_image_bytes("red"))
    (tmp_path / "imgs" / "dogs" / "broken.jpg").write_bytes(_image_bytes("red")[:40])  # truncated JPEG
    src = open_source(str(tmp_path / "imgs"))
    assert isinstance(src, ImageFolderSource)
    assert [(r.source, r.label) for r in src.records] == [
        ("cats/0.jpg", "cats"), ("cats/1.jpg", "cats"), ("dogs/0.jpg", "dogs"), ("dogs/1.jpg", "dogs"), ("dogs/broken.jpg", "dogs")]
    prepared = prepare_dataset(DatasetConfig(source=str(tmp_path / "imgs"), out=str(tmp_path / "datasets")))
    assert prepared.manifest["n_samples"] == 4 and prepared.manifest["skipped"] == ["dogs/broken.jpg"]


def test_wordnet_definitions_and_labels():
    try:
        src = open_source("wordnet:2000")
    except DataError as e:
        assert "apt-get install wordnet-base" in str(e)
        pytest.skip("Debian wordnet-base is not installed")
    assert isinstance(src, WordNetSource) and src.modality == "text" and len(src.records) == 2000
    assert src.records == WordNetSource(limit=2000).records  # stable order
    labels = {r.label for r in src.records}
    assert {"noun.animal", "noun.artifact", "verb.motion", "adj.all"} <= labels and len(labels) > 30
    for r in src.records:
        pos, offset = r.source.split(":")[1:]
        assert r.source.startswith("wordnet:") and pos in ("noun", "verb", "adj", "adv") and len(offset) == 8
        assert r.caption and '"' not in r.caption and "|" not in r.caption
    by_source = {r.source: r for r in WordNetSource().records}
    entity = by_source["wordnet:noun:00001740"]  # the root synset `entity`
    assert entity.label == "noun.Tops" and entity.caption.startswith("that which is perceived or known or inferred")
    assert src.load(0) == src.records[0].caption
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        WordNetSource(root=Path("/nonexistent"))


def test_table_fingerprint_changes_when_an_image_it_names_changes(tmp_path):
    from PIL import Image

    from precompute.sources import TableSource

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("image,caption\na.png,red square\n")
    before = TableSource(tmp_path / "t.csv").fingerprint()
    Image.new("RGB", (16, 16), "blue").save(tmp_path / "a.png")
    assert TableSource(tmp_path / "t.csv").fingerprint() != before


def test_images_over_the_pixel_cap_are_skipped_and_listed_without_pillows_warning(tmp_path, monkeypatch, capfd):
    """A 90 MP PNG used to print Pillow's multi-line DecompressionBombWarning and be decoded (270 MB)."""
    import warnings

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("L", (10_000, 9_000)).save(imgs / "huge.png")  # 90 MP: over Pillow's own warning threshold
    Image.new("L", (8_000, 7_000)).save(imgs / "big.png")  # 56 MP: over the 50 MP default cap only
    Image.new("RGB", (40, 30), "red").save(imgs / "small.png")
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning Pillow emits fails the test
        prepared = prepare_dataset(DatasetConfig(source=str(imgs), out=str(tmp_path / "datasets")))
    assert prepared.manifest["n_samples"] == 1 and sorted(prepared.manifest["skipped"]) == ["big.png", "huge.png"]
    assert "DecompressionBomb" not in capfd.readouterr().err
    # the cap is configurable
    monkeypatch.setenv("SAESCOPE_MAX_MEGAPIXELS", "0.001")  # 1,000 pixels: the 40x30 image is over it
    (imgs / "big.png").unlink()
    (imgs / "huge.png").unlink()
    Image.new("RGB", (20, 20), "blue").save(imgs / "tiny.png")
    prepared = prepare_dataset(DatasetConfig(source=str(imgs), out=str(tmp_path / "datasets2")))
    assert prepared.manifest["skipped"] == ["small.png"] and prepared.manifest["n_samples"] == 1
    monkeypatch.setenv("SAESCOPE_MAX_MEGAPIXELS", "lots")
    with pytest.raises(DataError, match="SAESCOPE_MAX_MEGAPIXELS='lots' must be a positive number"):
        prepare_dataset(DatasetConfig(source=str(imgs), out=str(tmp_path / "datasets3")))

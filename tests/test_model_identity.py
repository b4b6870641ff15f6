"""A store's identity is the model's weights; bad model inputs fail before anything is written.

Tiny CLIP towers are saved to folders in the test and extracted through the real CLI/`extract`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.cli import main as cli_main
from precompute.extract import ExtractConfig, extract
from precompute.extractors.hf import TRANSFORMERS_FLOOR, build_hf_extractor, check_transformers_version
from precompute.extractors.identity import canonical_spec, folder_hash, store_identity
from sae_core.errors import ConfigError
from sae_core.store import ActivationStore

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32,
          "patch_size": 8}
TEXT = {"vocab_size": 56, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}


def _save_vision(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _cfg(images: Path, model: str, data_root: Path, **kw) -> ExtractConfig:
    return ExtractConfig(dataset=str(images), model=model, layer="-1", tokens="cls", data_root=str(data_root), device="cpu", **kw)


def test_same_weights_one_store_changed_weights_a_new_one(tmp_path, images, monkeypatch):
    model = _save_vision(tmp_path / "a" / "clip", seed=0)
    data = tmp_path / "data"
    first = extract(_cfg(images, f"hf:{model}", data))
    manifest = json.loads((first.store_dpath / "manifest.json").read_text())
    assert manifest["model"] == f"hf:{model.resolve()}"
    assert manifest["model_revision"] == folder_hash(model) and manifest["model_revision"].startswith("sha256:")

    monkeypatch.chdir(tmp_path / "a")  # `hf:clip` relative to here is the same folder
    assert extract(_cfg(images, "hf:clip", data)).store_dpath == first.store_dpath
    assert extract(_cfg(images, "hf:clip", data)).reused
    copy = tmp_path / "b" / "clip"
    shutil.copytree(model, copy)  # the same weights under another path
    again = extract(_cfg(images, f"hf:{copy}", data))
    assert again.store_dpath == first.store_dpath and again.reused

    _save_vision(model, seed=1)  # re-saved, changed weights in the same folder
    changed = extract(_cfg(images, f"hf:{model}", data))
    assert changed.store_dpath != first.store_dpath and not changed.reused
    old, new = (ActivationStore(r.store_dpath).rows(np.arange(5)) for r in (first, changed))
    assert not torch.allclose(old, new)
    expected = _hidden_cls(model, images)
    torch.testing.assert_close(new[:, :], expected, atol=1e-5, rtol=1e-5)


def _hidden_cls(model: Path, images: Path) -> torch.Tensor:
    tower = transformers.CLIPVisionModel.from_pretrained(model).eval()
    ex = build_hf_extractor(tower, "-1", "cls")
    batch = ex.prepare([Image.open(images / f"{i}.png") for i in range(5)])
    with torch.no_grad():
        return tower(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states[-1][:, 0]


def test_identity_rules():
    assert store_identity("efficientnet-lite0", "abc") == {"model": "efficientnet-lite0"}  # packaged: ids unchanged
    assert store_identity("hf:openai/clip-vit-base-patch32", "c0ffee") == {"model": "hf:openai/clip-vit-base-patch32",
                                                                           "model_revision": "c0ffee"}
    assert canonical_spec("hf:openai/clip-vit-base-patch32") == "hf:openai/clip-vit-base-patch32"
    assert store_identity(f"hf:{ROOT}", "sha256:1")["model"] == "hf:<folder>"


def test_folder_hash_sees_every_output_changing_file(tmp_path):
    model = _save_vision(tmp_path / "m", seed=0)
    before = folder_hash(model)
    (model / "README.md").write_text("a model card changes nothing")
    (model / ".cache").mkdir()
    (model / ".cache" / "x.lock").write_text("download state")
    assert folder_hash(model) == before
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-3}))
    assert folder_hash(model) != before


def _run_cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()  # drop what building the test model printed
    code = cli_main(["extract", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--layer", "7"], r"layer '7' is out of range: this model has 2 blocks"),
    (["--tokens", "spans"], r"token selection 'spans' is not supported here"),
    (["--device", "tpu"], r"device='tpu'; use cpu, cuda"),
    (["--model", "hf:"], r"names no model"),
    (["--model", "resnet"], r"model 'resnet' is unknown"),
    (["--revision", "main"], r"--revision 'main': .* is a local folder"),
])
def test_bad_model_flags_fail_in_one_line_and_write_nothing(tmp_path, images, capsys, flags, message):
    model = _save_vision(tmp_path / "clip", seed=0)
    data = tmp_path / "data"
    code, err = _run_cli(capsys, "--dataset", str(images), "--model", f"hf:{model}", "--layer", "-1", "--tokens", "cls",
                         "--device", "cpu", "--data-root", str(data), *flags)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not data.exists()  # no dataset folder, no thumbnail, no store


def test_text_tower_without_a_tokenizer_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "clip"
    config = transformers.CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)
    transformers.CLIPModel(config).eval().save_pretrained(model)  # no tokenizer files
    captions = tmp_path / "captions.txt"
    captions.write_text("a photo of a cat\na diagram of a dog\n")
    data = tmp_path / "data"
    code, err = _run_cli(capsys, "--dataset", f"text:{captions}", "--model", f"hf:{model}", "--layer", "pooler",
                         "--tokens", "pooled", "--device", "cpu", "--data-root", str(data))
    assert code == 2 and "tokenizer is missing or empty" in err and len(err.strip().splitlines()) == 1, err
    assert not data.exists()


def test_loader_reports_are_quiet_unless_asked(tmp_path, images, capfd):
    """A tower cut from a combined checkpoint makes transformers log a load report and draw a bar."""
    torch.manual_seed(0)
    model = tmp_path / "clip"
    config = transformers.CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)
    transformers.CLIPModel(config).eval().save_pretrained(model)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        capfd.readouterr()
        extract(_cfg(images, f"hf:{model}", tmp_path / "quiet"))
        assert "Loading weights" not in capfd.readouterr().err
        assert not any("LOAD REPORT" in r.getMessage() for r in records)
        assert transformers.logging.get_verbosity() == transformers.logging.WARNING  # restored afterwards
        extract(_cfg(images, f"hf:{model}", tmp_path / "loud", verbose=True))
        assert "Loading weights" in capfd.readouterr().err
        assert any("LOAD REPORT" in r.getMessage() for r in records)
    finally:
        logging.getLogger("transformers").removeHandler(handler)


def test_transformers_floor_matches_pyproject_and_is_enforced():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floors = {spec.split(">=")[1] for deps in pyproject["project"]["optional-dependencies"].values()
              for spec in deps if spec.startswith("transformers")}
    assert floors == {TRANSFORMERS_FLOOR}
    check_transformers_version(transformers.__version__)
    with pytest.raises(ConfigError, match=r"transformers 4\.45\.0 is older than 4\.56"):
        check_transformers_version("4.45.0")


def _hub_cache(cache: Path, repo: str, commit: str, seed: int) -> None:
    """A Hugging Face cache holding one snapshot of `repo`, with refs/main pointing at it."""
    base = cache / f"models--{repo.replace('/', '--')}"
    _save_vision(base / "snapshots" / commit, seed=seed)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)


def test_hub_model_store_records_the_resolved_commit(tmp_path, images):
    """Offline, through a hub cache built here: `main` resolves to a commit; a new commit is a new store."""
    cache, data = tmp_path / "hub", tmp_path / "data"
    first, second = "a" * 40, "b" * 40
    _hub_cache(cache, "tiny/clip", first, seed=0)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "precompute.cli", "extract", "--dataset", str(images), "--model", "hf:tiny/clip",
           "--layer", "-1", "--tokens", "cls", "--device", "cpu", "--data-root", str(data)]

    def run(*extra: str) -> dict:
        out = subprocess.run(cmd + list(extra), env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode == 0, out.stderr
        store = Path(out.stdout.split("store ")[1].split(" (")[0])
        return json.loads((store / "manifest.json").read_text()) | {"dpath": str(store)}

    main = run()
    assert main["model_revision"] == first and main["model"] == "hf:tiny/clip"
    assert run("--revision", first)["dpath"] == main["dpath"]
    _hub_cache(cache, "tiny/clip", second, seed=1)  # the hub's main moved on
    moved = run()
    assert moved["model_revision"] == second and moved["dpath"] != main["dpath"]

"""open_clip image towers through `saescope extract`: stored activations are the model's own
intermediates, the store is named by the weights, and bad specs are one line with nothing written.

A tiny ViT architecture is registered with open_clip from a config file written here, and its
random weights saved to a local checkpoint file and to an open_clip `local-dir` folder; nothing
is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.cli import main as cli_main
from precompute.extract import ExtractConfig, extract
from precompute.extractors import ExtractorError, build_extractor
from precompute.extractors.identity import folder_hash
from precompute.extractors.open_clip_load import file_hash, import_open_clip
from sae_core.store import ActivationStore

SIDE_SITE = Path(__file__).resolve().parents[1] / ".openclip-site"
"""Where scripts/install.sh puts open_clip, timm and torchvision when torchvision cannot import in
the venv (a CUDA build beside a CPU torch). Loaded from there, through import_open_clip's operator
declarations, torchvision imports, so transformers (which then sees it) keeps working."""
try:
    open_clip = import_open_clip()
except ExtractorError:
    if not (SIDE_SITE / "open_clip").is_dir():  # the extra is optional: tests skip where it is missing
        pytest.skip("open_clip_torch is not installed (pip install 'saescope[openclip]')", allow_module_level=True)
    sys.path.append(str(SIDE_SITE))
    open_clip = import_open_clip()


ARCH = "saescope-tiny-vit"
MODEL_CFG = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
N_IMAGES = 5


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    """Register the tiny architecture under its name, as a user's own config file would be."""
    folder = tmp_path_factory.mktemp("oc_cfg")
    (folder / f"{ARCH}.json").write_text(json.dumps(MODEL_CFG))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    return ARCH


def _save_weights(fpath: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH, pretrained=None)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), fpath)
    return fpath


def _save_folder(folder: Path, seed: int) -> Path:
    """open_clip's hub layout: open_clip_config.json with the model_cfg, and the weights beside it."""
    _save_weights(folder / "open_clip_pytorch_model.bin", seed)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": {}}))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oc_imgs")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 255, (36 + 4 * i, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _reference(weights: Path, images: Path) -> tuple[torch.Tensor, dict]:
    """The model's own intermediates (open_clip's `forward_intermediates`), block inputs and embedding."""
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(weights))
    model.eval()
    x = torch.stack([preprocess(Image.open(images / f"{i}.png").convert("RGB")) for i in range(N_IMAGES)])
    with torch.no_grad():
        out = model.visual.forward_intermediates(x, indices=[0, 1, 2], output_fmt="NLC", output_extra_tokens=True,
                                                 intermediates_only=True)
        blocks = [torch.cat([c, p], dim=1) for c, p in zip(out["image_intermediates_prefix"], out["image_intermediates"])]
        embeds = model.visual._embeds(x)  # hidden_states[0]: the input of block 0, after ln_pre
        pooled = model.encode_image(x)
    return x, {"0": embeds, "1": blocks[0], "2": blocks[1], "3": blocks[2], "-1": blocks[2], "-2": blocks[1], "pooler": pooled}


def _cfg(images: Path, data: Path, model: str, layer: str, tokens: str, **kw) -> ExtractConfig:
    return ExtractConfig(dataset=str(images), model=model, layer=layer, tokens=tokens, data_root=str(data), device="cpu", **kw)


def _stored(dpath: Path) -> torch.Tensor:
    store = ActivationStore(dpath)
    m = store.manifest
    return store.rows(np.arange(N_IMAGES * m["tokens_per_sample"])).reshape(N_IMAGES, m["tokens_per_sample"], m["d_in"])


@pytest.mark.parametrize(("layer", "tokens"), [("-2", "all"), ("0", "cls"), ("1", "patches"), ("-1", "pooled")])
def test_stored_activations_equal_the_models_intermediates(tmp_path, arch, images, layer, tokens):
    weights = _save_weights(tmp_path / "w" / "tiny.pt", seed=0)
    result = extract(_cfg(images, tmp_path / "data", f"open_clip:{arch}", layer, tokens, pretrained=str(weights)))
    got = _stored(result.store_dpath)
    _, ref = _reference(weights, images)
    want = {"all": ref[layer], "cls": ref[layer][:, :1], "patches": ref[layer][:, 1:],
            "pooled": ref[layer].mean(1, keepdim=True)}[tokens]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    manifest = ActivationStore(result.store_dpath).manifest
    assert manifest["tokens_per_sample"] == {"all": 17, "cls": 1, "patches": 16, "pooled": 1}[tokens]
    assert manifest["grid"] == ([4, 4] if tokens == "patches" else None)


def test_pooler_is_the_image_embedding_and_layers_share_one_pass(tmp_path, arch, images):
    weights = _save_weights(tmp_path / "tiny.pt", seed=3)
    result = extract(_cfg(images, tmp_path / "data", f"open_clip:{arch}", "pooler,-2", "pooled,cls", pretrained=str(weights)))
    _, ref = _reference(weights, images)
    pooler, block = (_stored(d) for d in result.store_dpaths)
    torch.testing.assert_close(pooler[:, 0], ref["pooler"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block, ref["-2"][:, :1], atol=1e-5, rtol=1e-5)
    assert ActivationStore(result.store_dpaths[0]).manifest["d_in"] == 16  # embed_dim, after the projection


def test_identity_is_the_weights_not_their_path(tmp_path, arch, images):
    data = tmp_path / "data"
    weights = _save_weights(tmp_path / "a" / "tiny.pt", seed=0)
    first = extract(_cfg(images, data, f"open_clip:{arch}", "-1", "cls", pretrained=str(weights)))
    manifest = ActivationStore(first.store_dpath).manifest
    assert manifest["model"] == f"open_clip:{arch}" and manifest["model_revision"] == file_hash(weights)
    copy = tmp_path / "b" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    again = extract(_cfg(images, data, f"open_clip:{arch}", "-1", "cls", pretrained=str(copy)))
    assert again.store_dpath == first.store_dpath and again.reused
    _save_weights(weights, seed=1)  # changed weights under the same path: a new store
    changed = extract(_cfg(images, data, f"open_clip:{arch}", "-1", "cls", pretrained=str(weights)))
    assert changed.store_dpath != first.store_dpath and not changed.reused
    assert not torch.allclose(_stored(first.store_dpath), _stored(changed.store_dpath))

    folder = _save_folder(tmp_path / "f" / "tiny", seed=0)  # the same weights as a local-dir folder
    from_folder = extract(_cfg(images, data, f"open_clip:{folder}", "-1", "cls"))
    m = ActivationStore(from_folder.store_dpath).manifest
    assert m["model"] == f"open_clip:{folder.resolve()}" and m["model_revision"] == folder_hash(folder)
    torch.testing.assert_close(_stored(from_folder.store_dpath), _stored(first.store_dpath))
    moved = tmp_path / "g" / "tiny"  # the folder's name is the store's readable slug; its files are the id
    shutil.copytree(folder, moved)
    assert extract(_cfg(images, data, f"open_clip:{moved}", "-1", "cls")).store_dpath == from_folder.store_dpath


def test_resnet_towers_are_refused_by_name(tmp_path):
    open_clip.add_model_config(_write_cfg(tmp_path, "saescope-tiny-rn", {
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}))
    torch.save(open_clip.create_model("saescope-tiny-rn").state_dict(), tmp_path / "rn.pt")
    with pytest.raises(Exception, match="ModifiedResNet; only open_clip VisionTransformer towers"):
        build_extractor("open_clip:saescope-tiny-rn", "-1", "cls", pretrained=str(tmp_path / "rn.pt"))


def _write_cfg(folder: Path, name: str, cfg: dict) -> Path:
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    return folder / f"{name}.json"


@pytest.mark.parametrize(("model", "pretrained", "message"), [
    ("open_clip:ViT-Nope-99", "", r"open_clip:ViT-Nope-99 is not an open_clip architecture; e\.g\. \["),
    (f"open_clip:{ARCH}", "", r"needs --pretrained: a checkpoint file or one of its tags"),
    (f"open_clip:{ARCH}", "missing.pt", r"--pretrained '\S*missing.pt': no such file, nor a tag of"),
    ("open_clip:/no/such/folder", "", r"open_clip:/no/such/folder: no such folder"),
    ("open_clip:", "", r"names no model"),
    ("hf:whatever", "tiny.pt", r"--pretrained '\S*tiny.pt' applies to open_clip: architectures"),
    (f"open_clip:{ARCH}", "garbage.pt", r"cannot load open_clip saescope-tiny-vit with .*garbage\.pt"),
    (f"open_clip:{ARCH}", "tiny.pt --layer 9", r"layer '9' is out of range: this model has 3 blocks"),
    (f"open_clip:{ARCH}", "tiny.pt --tokens registers", r"token selection 'registers' is not supported here"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, arch, images, capsys, model, pretrained, message):
    _save_weights(tmp_path / "tiny.pt", seed=0)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    data = tmp_path / "data"
    extra = pretrained.split()
    if extra:
        extra[0] = str(tmp_path / extra[0])
        extra.insert(0, "--pretrained")
    args = ["extract", "--dataset", str(images), "--model", model, "--layer", "-1", "--tokens", "cls", "--device", "cpu",
            "--data-root", str(data), *extra]
    capsys.readouterr()
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not data.exists()


def test_a_folder_without_config_or_with_pretrained_is_refused(tmp_path, arch):
    folder = _save_folder(tmp_path / "tiny", seed=0)
    with pytest.raises(Exception, match="is a folder, which holds its weights; drop --pretrained"):
        build_extractor(f"open_clip:{folder}", "-1", "cls", pretrained="laion2b_s34b_b79k")
    (folder / "open_clip_config.json").unlink()
    with pytest.raises(Exception, match="no open_clip_config.json in the folder"):
        build_extractor(f"open_clip:{folder}", "-1", "cls")


def test_the_live_worker_rebuilds_the_extraction_with_its_weights(tmp_path, arch, images):
    """A checkpoint-file store inspects live with the same weights: the worker reads `--pretrained`
    from the store manifest's resolved config (without it, open_clip would build random weights)."""
    from precompute.live.engine import LiveEngine
    from precompute.live.inputs import LiveInput
    from precompute.live.specs import spec_from_checkpoint

    weights = _save_weights(tmp_path / "w" / "tiny.pt", seed=5)
    result = extract(_cfg(images, tmp_path / "data", f"open_clip:{arch}", "-2", "all", pretrained=str(weights)))
    sae_dpath = tmp_path / "sae"
    sae_dpath.mkdir()
    (sae_dpath / "cfg.json").write_text(json.dumps({"store": {"dpath": str(result.store_dpath)},
                                                     "sae": {"d_in": 32, "d_sae": 64}}))
    spec = spec_from_checkpoint(sae_dpath)
    assert spec.pretrained == str(weights)
    engine = LiveEngine(None, "cpu", specs={spec.sae_id: spec})
    ims = [Image.open(p).convert("RGB") for p in sorted(images.glob("*.png"), key=lambda p: int(p.stem))]
    got = engine.activations([spec.sae_id], [LiveInput(im, "image") for im in ims])
    torch.testing.assert_close(torch.stack([g[spec.sae_id] for g in got]), _stored(result.store_dpath), atol=1e-5, rtol=1e-5)

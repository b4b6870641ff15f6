"""Extractors for transformers towers agree with the models' own `output_hidden_states`.

All models are tiny and built from configs (no hub access); one is saved to a folder and loaded
back through the `hf:<folder>` spec to cover the `from_pretrained` route.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from precompute.extractors.base import ExtractorError, ExtractorInfo
from precompute.extractors.hf import build_hf_extractor, resolve_layer
from precompute.extractors.module import LayerCapture, ModuleExtractor, select_tokens

transformers = pytest.importorskip("transformers")

N_LAYERS = 3
D = 32
IMAGE = 32
PATCH = 8  # 4x4 grid
VOCAB_CHARS = "abcdefghijklmnopqrstuvwxyz"


def _vision_kwargs() -> dict:
    return {
        "hidden_size": D,
        "intermediate_size": 64,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "image_size": IMAGE,
        "patch_size": PATCH,
    }


def _text_config() -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        vocab_size=2 + 2 * len(VOCAB_CHARS) + 2,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


@pytest.fixture(scope="module")
def clip_vision():
    torch.manual_seed(0)
    return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**_vision_kwargs())).eval()


@pytest.fixture(scope="module")
def siglip_vision():
    torch.manual_seed(1)
    return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**_vision_kwargs())).eval()


@pytest.fixture(scope="module")
def clip_text():
    torch.manual_seed(2)
    return transformers.CLIPTextModel(_text_config()).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real CLIP BPE tokenizer over a 56-token vocabulary (ids must fit the tiny config)."""
    d = tmp_path_factory.mktemp("tok")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in VOCAB_CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["ca"] = len(vocab)
    vocab["cat</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    return transformers.CLIPTokenizer(
        str(d / "vocab.json"),
        str(d / "merges.txt"),
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(40, 32), (32, 50), (64, 64)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


CAPTIONS = ["a cat", "a dog on a mat", "cat cat cat"]


def _hidden(model, **inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


@pytest.mark.parametrize(
    ("layer", "index"),
    [("0", 0), ("1", 1), ("2", 2), ("3", 3), ("-1", 3), ("-2", 2), ("-4", 0)],
)
@pytest.mark.parametrize(
    ("selection", "tokens", "grid"),
    [("cls", 1, None), ("patches", 16, (4, 4)), ("all", 17, None), ("pooled", 1, None)],
)
def test_clip_vision_matches_hidden_states(clip_vision, images, layer, index, selection, tokens, grid):
    ex = build_hf_extractor(clip_vision, layer, selection)
    batch = ex.prepare(images)
    acts = ex.activations(batch)
    hs = _hidden(clip_vision, pixel_values=batch["pixel_values"]).hidden_states[index]
    expected = {
        "cls": hs[:, :1],
        "patches": hs[:, 1:],
        "all": hs,
        "pooled": hs.mean(1, keepdim=True),
    }[selection]
    assert acts.dtype == torch.float32
    assert acts.shape == (3, tokens, D)
    torch.testing.assert_close(acts, expected, atol=1e-6, rtol=1e-6)
    assert (ex.info.tokens_per_sample, ex.info.grid, ex.info.d_in) == (tokens, grid, D)
    assert ex.info.modality == "image" and ex.info.layer == layer


def test_clip_vision_pooler_and_last_hidden_state(clip_vision, images):
    pooler = build_hf_extractor(clip_vision, "pooler", "pooled")
    last = build_hf_extractor(clip_vision, "last_hidden_state", "all")
    batch = pooler.prepare(images)
    out = _hidden(clip_vision, pixel_values=batch["pixel_values"])
    torch.testing.assert_close(pooler.activations(batch)[:, 0], out.pooler_output, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(last.activations(batch), out.last_hidden_state, atol=1e-6, rtol=1e-6)
    assert pooler.info.tokens_per_sample == 1 and pooler.info.grid is None


def test_forward_stops_after_hooked_layer(clip_vision, images):
    ex = build_hf_extractor(clip_vision, "1", "patches")
    later_calls = []
    handles = [
        clip_vision.encoder.layers[1].register_forward_hook(lambda *a: later_calls.append(1)),
        clip_vision.post_layernorm.register_forward_hook(lambda *a: later_calls.append(2)),
    ]
    try:
        ex.activations(ex.prepare(images))
    finally:
        for h in handles:
            h.remove()
    assert later_calls == []
    # the extractor's own hook is gone: the model runs normally afterwards
    hooks = clip_vision.encoder.layers[0]._forward_hooks.values()
    assert not any(isinstance(getattr(h, "__self__", None), LayerCapture) for h in hooks)
    out = _hidden(clip_vision, pixel_values=ex.prepare(images)["pixel_values"])
    assert len(out.hidden_states) == N_LAYERS + 1


@pytest.mark.parametrize(("layer", "index"), [("0", 0), ("2", 2), ("-1", 3)])
def test_siglip_patches_match_hidden_states(siglip_vision, images, layer, index):
    ex = build_hf_extractor(siglip_vision, layer, "patches")
    batch = ex.prepare(images)
    hs = _hidden(siglip_vision, pixel_values=batch["pixel_values"]).hidden_states[index]
    acts = ex.activations(batch)
    assert acts.shape == (3, 16, D)
    torch.testing.assert_close(acts, hs, atol=1e-6, rtol=1e-6)
    assert ex.info.grid == (4, 4) and ex.info.tokens_per_sample == 16


def test_siglip_last_hidden_state_pooler_and_image_size(siglip_vision, images):
    last = build_hf_extractor(siglip_vision, "last_hidden_state", "patches")
    pooler = build_hf_extractor(siglip_vision, "pooler", "pooled")
    batch = last.prepare(images)
    out = _hidden(siglip_vision, pixel_values=batch["pixel_values"])
    torch.testing.assert_close(last.activations(batch), out.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pooler.activations(batch)[:, 0], out.pooler_output, atol=1e-6, rtol=1e-6)
    # a larger input: 48 px / 8 = 6x6 grid with interpolated position embeddings
    big = build_hf_extractor(siglip_vision, "-2", "all", image_size=48)
    batch = big.prepare(images)
    assert batch["pixel_values"].shape == (3, 3, 48, 48)
    with torch.no_grad():
        hs = siglip_vision(
            pixel_values=batch["pixel_values"],
            interpolate_pos_encoding=True,
            output_hidden_states=True,
        ).hidden_states[-2]
    torch.testing.assert_close(big.activations(batch), hs, atol=1e-6, rtol=1e-6)
    assert (big.info.tokens_per_sample, big.info.grid) == (36, (6, 6))


def test_clip_text_pooled_and_tokens(clip_text, tokenizer):
    pooled = build_hf_extractor(clip_text, "pooler", "pooled", tokenizer=tokenizer)
    tokens = build_hf_extractor(clip_text, "-2", "all", tokenizer=tokenizer)
    mean = build_hf_extractor(clip_text, "1", "pooled", tokenizer=tokenizer)
    batch = pooled.prepare(CAPTIONS)
    assert batch["input_ids"].shape == (3, 16)
    out = _hidden(clip_text, **batch)
    torch.testing.assert_close(pooled.activations(batch)[:, 0], out.pooler_output, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tokens.activations(batch), out.hidden_states[-2], atol=1e-6, rtol=1e-6)
    mask = batch["attention_mask"][:, :, None].float()
    expected = (out.hidden_states[1] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(mean.activations(batch)[:, 0], expected, atol=1e-6, rtol=1e-6)
    assert (pooled.info.tokens_per_sample, pooled.info.modality, pooled.info.d_in) == (
        1,
        "text",
        D,
    )
    assert tokens.info.tokens_per_sample == 16


def test_clip_text_with_projection_uses_pre_projection_pooler(clip_text, tokenizer):
    torch.manual_seed(3)
    model = transformers.CLIPTextModelWithProjection(_text_config()).eval()
    ex = build_hf_extractor(model, "pooler", "pooled", tokenizer=tokenizer)
    batch = ex.prepare(CAPTIONS)
    expected = _hidden(model.text_model, **batch).pooler_output
    torch.testing.assert_close(ex.activations(batch)[:, 0], expected, atol=1e-6, rtol=1e-6)


def test_from_pretrained_folder_via_spec(tmp_path, images, tokenizer):
    """A combined CLIP checkpoint + processor + tokenizer saved to disk, loaded by `hf:<folder>`."""
    torch.manual_seed(4)
    config = transformers.CLIPConfig(
        vision_config=_vision_kwargs(),
        text_config=_text_config().to_dict(),
        projection_dim=16,
    )
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    spec = f"hf:{tmp_path}"
    vision = build_hf_extractor(spec, "-2", "patches")
    text = build_hf_extractor(spec, "pooler", "pooled", modality="text")
    assert vision.info.model == spec and vision.info.grid == (4, 4)

    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    batch = vision.prepare(images)
    torch.testing.assert_close(batch["pixel_values"], pixel_values)
    hs = _hidden(model.vision_model, pixel_values=pixel_values).hidden_states[-2]
    torch.testing.assert_close(vision.activations(batch), hs[:, 1:], atol=1e-6, rtol=1e-6)

    tbatch = text.prepare(CAPTIONS)
    expected = _hidden(model.text_model, **tbatch).pooler_output
    torch.testing.assert_close(text.activations(tbatch)[:, 0], expected, atol=1e-6, rtol=1e-6)


def test_errors_name_layer_and_choices(clip_vision, siglip_vision, clip_text, tokenizer):
    with pytest.raises(ExtractorError, match=r"'4'.*-4\.\.3"):
        build_hf_extractor(clip_vision, "4", "patches")
    with pytest.raises(ExtractorError, match=r"'blocks'.*pooler"):
        build_hf_extractor(clip_vision, "blocks", "patches")
    with pytest.raises(ExtractorError, match=r"'cls'.*patches"):
        build_hf_extractor(siglip_vision, "-1", "cls")
    with pytest.raises(ExtractorError, match=r"'patches'.*pooled"):
        build_hf_extractor(clip_text, "pooler", "patches", tokenizer=tokenizer)
    with pytest.raises(ExtractorError, match="tokenizer"):
        build_hf_extractor(clip_text, "pooler", "pooled")
    assert resolve_layer("-2", 24, "encoder.layers") == ("encoder.layers.22", False)
    assert resolve_layer("22", 24, "encoder.layers") == ("encoder.layers.21", False)


def test_module_extractor_on_plain_module():
    """The generic path: a conv net's 4-D map becomes row-major patch tokens; later layers skip."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten())
    info = ExtractorInfo("toy", None, "1", "all", 64, (8, 8), 8, "image")
    ex = ModuleExtractor(net, "1", "all", torch.stack, info, has_cls=False)
    fired = []
    net[2].register_forward_hook(lambda *a: fired.append(1))
    x = torch.randn(2, 3, 8, 8)
    acts = ex.activations(ex.prepare(list(x)))
    expected = torch.relu(net[0](x)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(acts, expected)
    assert fired == []
    assert select_tokens(expected, "pooled", has_cls=False).shape == (2, 1, 8)
    with pytest.raises(ExtractorError, match=r"'cls'.*patches"):
        select_tokens(expected, "cls", has_cls=False)
    with pytest.raises(ExtractorError, match="3-tuple"):
        LayerCapture(net[0], output_index=5)._record((x, x, x))


def test_extract_in_bfloat16_is_recorded_and_is_another_store(tmp_path):
    """`--model-dtype bfloat16` (auto on CUDA) runs the tower in bf16: values close to float32,
    a store of its own, and the manifest says which precision made it."""
    from PIL import Image

    from precompute.extract import ExtractConfig, extract
    from sae_core.store import ActivationStore

    torch.manual_seed(5)
    folder = tmp_path / "clip"
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**_vision_kwargs())).eval().save_pretrained(folder)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 90, 200 - 30 * i)).save(imgs / f"{i}.png")
    common = dict(dataset=str(imgs), model=f"hf:{folder}", layer="-2", tokens="cls", data_root=str(tmp_path / "data"), device="cpu")
    fp32 = extract(ExtractConfig(**common))
    bf16 = extract(ExtractConfig(model_dtype="bfloat16", **common))
    assert fp32.store_dpath != bf16.store_dpath
    assert json.loads((bf16.store_dpath / "manifest.json").read_text())["model_dtype"] == "bfloat16"
    assert json.loads((fp32.store_dpath / "manifest.json").read_text())["model_dtype"] == "float32"
    a, b = (ActivationStore(r.store_dpath).rows(np.arange(6)) for r in (fp32, bf16))
    assert not torch.equal(a, b)
    torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)

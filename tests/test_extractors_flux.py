"""FLUX extractor on a tiny `FluxTransformer2DModel` (1 double + 1 single block, random weights).

Text and image token counts differ (7 vs 4x5=20) so a swapped stream shows up as a wrong shape;
the image stream of the last single block is also checked numerically against the model output
(it is what `norm_out` + `proj_out` turn into the prediction).
"""

from __future__ import annotations

import pytest
import torch

from precompute.extractors.base import ExtractorError
from precompute.extractors.flux import (
    FluxPipelineExtractor,
    FluxTransformerExtractor,
    build_flux_extractor,
)

diffusers = pytest.importorskip("diffusers")

GRID = (4, 5)
TEXT_LEN = 7
HEADS, HEAD_DIM = 2, 8
D = HEADS * HEAD_DIM
JOINT, POOLED, CHANNELS = 12, 10, 16


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=JOINT,
        pooled_projection_dim=POOLED,
        guidance_embeds=False,
        axes_dims_rope=(2, 2, 4),
    ).eval()


def _inputs(batch: int = 2, seed: int = 1, grid: tuple[int, int] = GRID) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return {
        "hidden_states": torch.randn(batch, h * w, CHANNELS, generator=g),
        "encoder_hidden_states": torch.randn(batch, TEXT_LEN, JOINT, generator=g),
        "pooled_projections": torch.randn(batch, POOLED, generator=g),
        "timestep": torch.full((batch,), 1.0),
        "img_ids": img_ids.reshape(h * w, 3),
        "txt_ids": torch.zeros(TEXT_LEN, 3),
    }


@pytest.mark.parametrize(
    ("layer", "stream", "selection", "shape", "grid"),
    [
        ("transformer_blocks.0", "image", "patches", (2, 20, D), GRID),
        ("transformer_blocks.0", "text", "all", (2, TEXT_LEN, D), None),
        ("transformer_blocks.0", "image", "pooled", (2, 1, D), None),
        ("single_transformer_blocks.0", "image", "patches", (2, 20, D), GRID),
        ("single_transformer_blocks.0", "text", "all", (2, TEXT_LEN, D), None),
    ],
)
def test_streams_and_shapes(transformer, layer, stream, selection, shape, grid):
    ex = FluxTransformerExtractor(transformer, layer, stream, selection, GRID, TEXT_LEN)
    acts = ex.activations(ex.prepare(_inputs()))
    assert acts.shape == shape and acts.dtype == torch.float32
    assert torch.isfinite(acts).all()
    assert (ex.info.tokens_per_sample, ex.info.grid, ex.info.d_in) == (
        shape[1],
        grid,
        D,
    )
    assert ex.info.layer == f"{layer}.{stream}"


def test_double_block_streams_match_block_outputs(transformer):
    """The picked streams are the block's own (encoder_hidden_states, hidden_states)."""
    seen = {}
    handle = transformer.transformer_blocks[0].register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            transformer(**_inputs(), return_dict=False)
    finally:
        handle.remove()
    text_out, image_out = seen["out"]
    for stream, expected in (("image", image_out), ("text", text_out)):
        sel = "patches" if stream == "image" else "all"
        ex = FluxTransformerExtractor(transformer, "transformer_blocks.0", stream, sel, GRID, TEXT_LEN)
        torch.testing.assert_close(ex.activations(_inputs()), expected, atol=1e-6, rtol=1e-6)


def test_single_block_image_stream_gives_the_prediction(transformer):
    """norm_out + proj_out of the last single block's image stream is the model output."""
    inputs = _inputs()
    ex = FluxTransformerExtractor(transformer, "single_transformer_blocks.0", "image", "patches", GRID, TEXT_LEN)
    acts = ex.activations(inputs)
    with torch.no_grad():
        out = transformer(**inputs, return_dict=False)[0]
        temb = transformer.time_text_embed(inputs["timestep"] * 1000, inputs["pooled_projections"])
        pred = transformer.proj_out(transformer.norm_out(acts, temb))
    torch.testing.assert_close(pred, out, atol=1e-5, rtol=1e-5)


def test_forward_stops_after_hooked_block(transformer):
    fired = []
    handle = transformer.single_transformer_blocks[0].register_forward_hook(lambda *a: fired.append(1))
    try:
        ex = FluxTransformerExtractor(transformer, "transformer_blocks.0", "image", "patches", GRID, TEXT_LEN)
        ex.activations(_inputs())
    finally:
        handle.remove()
    assert fired == []


def test_errors_name_choices(transformer):
    with pytest.raises(ExtractorError, match=r"transformer_blocks\.0\.\.0"):
        FluxTransformerExtractor(transformer, "transformer_blocks.3", "image", "patches", GRID, TEXT_LEN)
    with pytest.raises(ExtractorError, match="not a block"):
        FluxTransformerExtractor(transformer, "norm_out", "image", "patches", GRID, TEXT_LEN)
    with pytest.raises(ExtractorError, match=r"'cls'.*patches"):
        FluxTransformerExtractor(transformer, "transformer_blocks.0", "image", "cls", GRID, TEXT_LEN)
    with pytest.raises(ExtractorError, match=r"'patches'.*all"):
        FluxTransformerExtractor(transformer, "transformer_blocks.0", "text", "patches", GRID, TEXT_LEN)
    with pytest.raises(ExtractorError, match="stream"):
        FluxTransformerExtractor(transformer, "transformer_blocks.0", "both", "all", GRID, TEXT_LEN)
    with pytest.raises(ExtractorError, match="multiple of 16"):
        build_flux_extractor(object(), image_size=200)
    with pytest.raises(ExtractorError, match="names the text stream"):
        build_flux_extractor(object(), "transformer_blocks.0.text", stream="image")


class _FakePipe:
    """Stands in for FluxPipeline: one transformer call per step on caption-seeded noise."""

    name_or_path = "fake-flux"

    def __init__(self, transformer) -> None:
        self.transformer = transformer
        self.steps_seen: list[int] = []

    def set_progress_bar_config(self, **kwargs) -> None:
        pass

    def noise(self, generators, grid) -> torch.Tensor:
        n = grid[0] * grid[1]
        return torch.stack([torch.randn(n, CHANNELS, generator=g) for g in generators])

    def __call__(self, prompt, height, width, num_inference_steps, generator, **kwargs):
        grid = (height // 16, width // 16)
        inputs = _inputs(len(prompt), grid=grid)
        inputs["hidden_states"] = self.noise(generator, grid)
        for step in range(num_inference_steps):
            self.steps_seen.append(step)
            inputs["timestep"] = torch.full((len(prompt),), 1.0 - step / num_inference_steps)
            self.transformer(**inputs, return_dict=False)
        return type("Out", (), {"images": [f"image of {p}" for p in prompt]})()


@pytest.mark.parametrize("generate", [True, False])
def test_pipeline_extractor_first_step_and_images(transformer, generate):
    """The pipeline path keeps the first step's activations and the generated images."""
    pipe = _FakePipe(transformer)
    ex = build_flux_extractor(pipe, "transformer_blocks.0", "patches", image_size=64, generate=generate)
    assert isinstance(ex, FluxPipelineExtractor)
    assert ex.info.model == "diffusers:fake-flux" and ex.info.layer == "transformer_blocks.0.image"
    assert (ex.info.tokens_per_sample, ex.info.grid) == (16, (4, 4))
    captions = ["a red cat", "a blue dog"]
    acts = ex.activations(ex.prepare(captions))
    assert acts.shape == (2, 16, D)
    if generate:
        assert pipe.steps_seen == [0, 1, 2, 3]
        assert ex.generated_images() == ["image of a red cat", "image of a blue dog"]
    else:
        assert pipe.steps_seen == [0]  # stopped inside the first step
        assert ex.generated_images() is None
    # step 0 recomputed directly from the same caption-seeded noise
    first = FluxTransformerExtractor(transformer, "transformer_blocks.0", "image", "patches", (4, 4), TEXT_LEN)
    inputs = _inputs(2, grid=(4, 4))
    gens = [torch.Generator("cpu").manual_seed(ex.caption_seed(c)) for c in captions]
    inputs["hidden_states"] = pipe.noise(gens, (4, 4))
    torch.testing.assert_close(acts, first.activations(inputs), atol=1e-6, rtol=1e-6)
    # a caption's seed does not depend on its batch
    assert ex.caption_seed("a red cat") == build_flux_extractor(pipe, "transformer_blocks.0").caption_seed("a red cat")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A real `FluxPipeline` from tiny parts (CLIP BPE tokenizer standing in for T5's)."""
    import json

    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("fluxtok")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(
        str(d / "vocab.json"),
        str(d / "merges.txt"),
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    torch.manual_seed(0)
    clip = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=POOLED,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=len(vocab),
            d_model=JOINT,
            d_kv=4,
            d_ff=24,
            num_layers=1,
            num_heads=2,
        )
    )
    vae = diffusers.AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=CHANNELS // 4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.06,
        scaling_factor=1.5,
    )
    transformer = diffusers.FluxTransformer2DModel(
        in_channels=CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=JOINT,
        pooled_projection_dim=POOLED,
        axes_dims_rope=(2, 2, 4),
    )
    return diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=tok,
        text_encoder_2=t5,
        tokenizer_2=tok,
        transformer=transformer,
    )


def test_real_pipeline_generates_and_hooks_first_step(tiny_pipeline):
    """Through diffusers' own FluxPipeline: 64 px -> 4x4 image tokens, images kept, and the
    first-step activations are the same whether or not generation runs to the end."""
    kwargs = {"device": "cpu", "dtype": torch.float32, "image_size": 64}
    kwargs |= {"max_sequence_length": 16, "num_inference_steps": 2}
    # the registry's call shape: (name, layer, token_selection, device=, image_size=)
    gen = build_flux_extractor(tiny_pipeline, "transformer_blocks.0.image", "patches", **kwargs)
    fast = build_flux_extractor(tiny_pipeline, "transformer_blocks.0", "patches", stream="image", generate=False, **kwargs)
    text = build_flux_extractor(tiny_pipeline, "single_transformer_blocks.0.text", "all", generate=False, **kwargs)
    assert text.info.layer == "single_transformer_blocks.0.text" and text.info.tokens_per_sample == 16
    captions = ["a cat", "a dog on a mat"]
    acts = gen.activations(gen.prepare(captions))
    assert acts.shape == (2, 16, D) and gen.info.grid == (4, 4)
    images = gen.generated_images()
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    torch.testing.assert_close(fast.activations(fast.prepare(captions)), acts)
    assert fast.generated_images() is None
    assert text.activations(text.prepare(captions)).shape == (2, 16, D)


def test_flux_extraction_keeps_generated_images_for_the_index(tiny_pipeline, tmp_path):
    """`saescope extract --model diffusers:FOLDER` over captions: the images FLUX drew become the
    samples' thumbnails, and the index serves them as an image dataset."""
    import duckdb
    import numpy as np

    from precompute.extract import ExtractConfig, extract
    from precompute.index import IndexConfig, build_index
    from sae_core.checkpoint import save
    from sae_core.config import SAEConfig
    from sae_core.model import SparseAutoencoder
    from sae_core.store import ActivationStore

    folder = tmp_path / "tiny-flux"
    tiny_pipeline.save_pretrained(folder)
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\na dog on a mat\na red ball\n")
    result = extract(ExtractConfig(dataset=f"text:{captions}", model=f"diffusers:{folder}", layer="transformer_blocks.0.image",
                                   tokens="patches", image_size=64, batch_size=2, shard_samples=2, device="cpu",
                                   data_root=str(tmp_path / "data")))
    store = ActivationStore(result.store_dpath)
    assert store.grid == (4, 4) and store.n_samples == 3
    thumbs = sorted(p.name for p in (result.store_dpath / store.manifest["thumbs_dpath"]).iterdir())
    assert thumbs == ["0.webp", "1.webp", "2.webp"]

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=2, d_in=store.d_in, d_sae=16))
    sae.init_from_data(store.rows(np.arange(store.n_tokens)))
    ckpt = save(sae, tmp_path / "sae", store=store.summary())
    index = build_index(IndexConfig(saes=(str(ckpt),), out=str(tmp_path / "flux.duckdb"), top_n=3))
    con = duckdb.connect(str(index.fpath), read_only=True)
    modality, thumbs_dpath = con.execute("SELECT modality, thumbs_dpath FROM datasets").fetchone()
    assert modality == "image" and thumbs_dpath == str((result.store_dpath / "thumbs").resolve())
    assert con.execute("SELECT caption FROM samples ORDER BY sample_id").fetchall() == [("a cat",), ("a dog on a mat",), ("a red ball",)]

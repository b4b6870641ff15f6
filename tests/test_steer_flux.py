"""FLUX steering on tiny pipelines built from configs (random weights, no hub, CPU).

The prior is a real `FluxPriorReduxPipeline` (SigLIP 24 px / patch 8 -> a 3x3 grid of 8-d
tokens; the Redux projector must emit 4096-d tokens because the prior pads with 4096-d zero
T5 embeddings), the generator a real `FluxPipeline` (1 double + 1 single block, 64 px -> 4x4
image tokens) loaded the way users load it: no text encoders. Checks: the embedder receives
exactly `apply_edits` of SigLIP's output, an empty edit is bit-identical, block edits fire only
at the chosen steps, bad input is a one-line ConfigError, and the CLI end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.steer_flux import (
    EditSite,
    Generation,
    block_edit,
    generate,
    patch_mask,
    redux_condition,
    redux_edit,
    scale_edits,
    sweep,
)
from precompute.steer_flux_grid import LABEL_H, LABEL_W, image_grid
from sae_core.config import SAEConfig
from sae_core.errors import ConfigError
from sae_core.model import SparseAutoencoder
from sae_core.steering import Edit, apply_edits
from tests.test_extractors_flux import tiny_pipeline  # noqa: F401  (a FluxPipeline with tiny text encoders)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

SIGLIP_D, SIGLIP_SIDE, SIGLIP_PATCH = 8, 24, 8
GRID = (3, 3)
FLUX_D = 16  # 2 heads x 8
SIZE = 64
GEN = Generation(seed=0, steps=2, size=SIZE, guidance=0.0)


def _sae(d_in: int, seed: int) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=2, d_in=d_in, d_sae=16))
    sae.init_from_data(torch.randn(256, d_in))
    return sae.eval()


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=SIGLIP_D, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        image_size=SIGLIP_SIDE, patch_size=SIGLIP_PATCH)).eval()
    processor = transformers.SiglipImageProcessor(size={"height": SIGLIP_SIDE, "width": SIGLIP_SIDE})
    embedder = diffusers.pipelines.flux.modeling_flux.ReduxImageEncoder(redux_dim=SIGLIP_D, txt_in_features=4096)
    pipe = diffusers.FluxPriorReduxPipeline(image_encoder=siglip, feature_extractor=processor, image_embedder=embedder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux():
    torch.manual_seed(1)
    vae = diffusers.AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=4, norm_num_groups=1,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06, scaling_factor=1.5)
    transformer = diffusers.FluxTransformer2DModel(
        in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(2, 2, 4))
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                                  tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def siglip_sae():
    return _sae(SIGLIP_D, 2)


@pytest.fixture(scope="module")
def flux_sae():
    return _sae(FLUX_D, 3)


@pytest.fixture(scope="module")
def baseline(prior, flux, picture):
    return np.asarray(generate(flux, redux_condition(prior, picture), GEN))


def _embedder_inputs(prior, picture) -> list[torch.Tensor]:
    """What the Redux embedder actually receives (after every pre-hook)."""
    seen = []
    handle = prior.image_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    try:
        redux_condition(prior, picture)
    finally:
        handle.remove()
    return seen


def _siglip_output(prior, picture) -> torch.Tensor:
    pixels = prior.feature_extractor.preprocess(images=picture, do_resize=True, return_tensors="pt", do_convert_rgb=True)
    with torch.no_grad():
        return prior.image_encoder(**pixels).last_hidden_state


def test_redux_hook_feeds_the_embedder_the_edited_tensor(prior, picture, siglip_sae):
    edits = [Edit(3, "add", 5.0), Edit(7, "set", 0.0)]
    mask = patch_mask([0, 4], GRID)
    original = _siglip_output(prior, picture)
    assert original.shape == (1, 9, SIGLIP_D)
    with redux_edit(prior, siglip_sae, edits, mask) as record:
        (seen,) = _embedder_inputs(prior, picture)
    expected = apply_edits(siglip_sae, original, edits, mask)
    torch.testing.assert_close(seen, expected, rtol=0, atol=0)
    assert record.n_edits == 1
    changed = (seen != original).any(-1)[0]
    assert changed.tolist() == [True, False, False, False, True, False, False, False, False]  # only the masked cells
    (after,) = _embedder_inputs(prior, picture)  # the hook is gone after the with block
    assert torch.equal(after, original)


def test_empty_edit_is_bit_identical_and_an_edit_changes_the_image(prior, flux, picture, siglip_sae, baseline):
    with redux_edit(prior, siglip_sae, []) as record:
        same = np.asarray(generate(flux, redux_condition(prior, picture), GEN))
    assert record.n_edits == 1 and np.array_equal(same, baseline)
    with redux_edit(prior, siglip_sae, [Edit(3, "add", 200.0)]):
        steered = np.asarray(generate(flux, redux_condition(prior, picture), GEN))
    assert steered.shape == baseline.shape == (SIZE, SIZE, 3)
    assert not np.array_equal(steered, baseline)


def test_sweep_gives_one_image_per_strength_and_a_grid(prior, flux, picture, siglip_sae, baseline):
    strengths = [0.0, 1.0, 3.0]
    images = sweep(prior, flux, picture, siglip_sae, [Edit(3, "add", 200.0)], strengths, gen=GEN)
    assert len(images) == 3 and all(im.size == (SIZE, SIZE) for im in images)
    assert np.array_equal(np.asarray(images[0]), baseline)  # strength 0 of an add is no edit
    assert not np.array_equal(np.asarray(images[1]), np.asarray(images[2]))
    grid = image_grid([[picture, *images], [picture, *images]], ["3=+200", "again"], ["input", "x0", "x1", "x3"], SIZE)
    assert grid.size == (LABEL_W + 4 * SIZE, LABEL_H + 2 * SIZE)
    cell = np.asarray(grid)[LABEL_H:LABEL_H + SIZE, LABEL_W + 2 * SIZE:LABEL_W + 3 * SIZE]
    assert np.array_equal(cell, np.asarray(images[1]))  # cells are the images themselves (same size: no resampling)


def test_scale_edits_at_a_strength():
    edits = [Edit(1, "add", 2.0), Edit(2, "set", -1.0), Edit(3, "scale", 4.0)]
    assert scale_edits(edits, 0.5) == [Edit(1, "add", 1.0), Edit(2, "set", -0.5), Edit(3, "scale", 2.0)]
    assert scale_edits(edits, 0.0)[2] == Edit(3, "scale", 1.0)
    assert scale_edits([Edit(3, "scale", -1.0)], 1.0) == [Edit(3, "scale", -1.0)]
    with pytest.raises(ConfigError, match="scale factor of -1 has no strength 0.5"):
        scale_edits([Edit(3, "scale", -1.0)], 0.5)


def _transformer_outputs(flux, condition) -> list[torch.Tensor]:
    outs = []
    handle = flux.transformer.register_forward_hook(lambda m, a, out: outs.append(out[0].clone()))
    try:
        generate(flux, condition, GEN)
    finally:
        handle.remove()
    return outs


@pytest.mark.parametrize("layer", ["transformer_blocks.0.image", "transformer_blocks.0.text", "single_transformer_blocks.0"])
def test_block_edit_fires_only_at_the_chosen_steps(prior, flux, picture, flux_sae, layer):
    condition = redux_condition(prior, picture)
    plain = _transformer_outputs(flux, condition)
    assert len(plain) == GEN.steps
    with block_edit(flux.transformer, layer, flux_sae, [Edit(5, "add", 50.0)], at_steps=[1], n_image_tokens=16) as record:
        steered = _transformer_outputs(flux, condition)
    assert record.fired_steps == [1] and record.n_edits == 1
    assert torch.equal(steered[0], plain[0])  # step 0 untouched
    assert not torch.equal(steered[1], plain[1])
    n_tokens = 16 if layer.endswith(("image", "0")) else 512 + 9  # text stream: 512 zero T5 tokens + 9 Redux tokens
    assert record.last_input.shape == (1, n_tokens, FLUX_D)


def test_block_edit_hook_output_is_the_hand_computation(prior, flux, picture, flux_sae):
    """What the next block receives is apply_edits of the block's image stream at that step."""
    condition = redux_condition(prior, picture)
    block, nxt = flux.transformer.transformer_blocks[0], flux.transformer.single_transformer_blocks[0]
    raw, fed = [], []
    edits, mask = [Edit(5, "add", 50.0)], patch_mask([1, 2], (4, 4))
    h1 = block.register_forward_hook(lambda m, a, out: raw.append(out[1].clone()))
    h2 = nxt.register_forward_pre_hook(lambda m, a, kw: fed.append(kw["hidden_states"].clone()), with_kwargs=True)
    try:
        with block_edit(flux.transformer, "transformer_blocks.0", flux_sae, edits, token_mask=mask, n_image_tokens=16) as record:
            generate(flux, condition, GEN)
    finally:
        h1.remove()
        h2.remove()
    assert record.fired_steps == [0, 1]
    for before, after in zip(raw, fed):
        torch.testing.assert_close(after, apply_edits(flux_sae, before, edits, mask), rtol=0, atol=0)
        assert (after != before).any(-1)[0].nonzero().flatten().tolist() == [1, 2]


def test_bad_input_is_a_one_line_config_error(prior, flux, picture, siglip_sae, flux_sae):
    cases = [
        (lambda: redux_edit(prior, siglip_sae, [Edit(99, "add", 1.0)]).__enter__(), r"feature 99 does not exist.*0\.\.15"),
        (lambda: redux_edit(prior, flux_sae, [Edit(1, "add", 1.0)]).__enter__(), r"d_in=16 but SigLIP.* is 8 wide"),
        (lambda: redux_edit(prior, siglip_sae, [Edit(1, "add", 1.0)], torch.ones(4, dtype=torch.bool)).__enter__(),
         r"4 entries; .*3x3 grid \(9 entries\)"),
        (lambda: patch_mask([9], GRID), r"patch 9 is not a cell of the 3x3 grid"),
        (lambda: block_edit(flux.transformer, "transformer_blocks.0", siglip_sae, []).__enter__(), r"d_in=8 but FLUX"),
        (lambda: block_edit(flux.transformer, "transformer_blocks.4", flux_sae, []).__enter__(), r"does not exist"),
        (lambda: EditSite("transformer_blocks.0", (2,)).check(GEN), r"step 2 is not one of the 2 denoising steps"),
        (lambda: EditSite("redux", (0,)).check(GEN), r"--at-steps is for FLUX block edits"),
        (lambda: Generation(size=70), r"multiple of 16"),
    ]
    for call, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            call()
        assert "\n" not in str(err.value)
    # a block-stream mask of the wrong size is refused when the hook sees the tokens
    with pytest.raises(ConfigError, match=r"patch mask has 9 entries"):
        with block_edit(flux.transformer, "transformer_blocks.0", flux_sae, [Edit(1, "add", 1.0)], token_mask=torch.ones(9, dtype=torch.bool),
                        n_image_tokens=16):
            generate(flux, redux_condition(prior, picture), GEN)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, prior, flux, picture, siglip_sae):
    """Both pipelines saved with save_pretrained, an SAE checkpoint, an image and an index."""
    import duckdb

    from precompute.index_schema import create_tables
    from sae_core.checkpoint import save

    d = tmp_path_factory.mktemp("steer-flux")
    prior.save_pretrained(d / "prior")
    flux.save_pretrained(d / "flux")
    ckpt = save(siglip_sae, d / "sae")
    picture.save(d / "input.png")
    con = duckdb.connect(str(d / "index.duckdb"))
    create_tables(con)
    con.execute("INSERT INTO saes (sae_id, checkpoint) VALUES ('other', '/elsewhere'), ('siglip', ?)", [str(ckpt.resolve())])
    con.execute("INSERT INTO features (sae_id, feature_id, max_act) VALUES ('siglip', 3, 2.5), ('siglip', 4, NULL), ('other', 3, 9.0)")
    con.close()
    return d


def _cli(saved, *extra: str) -> list[str]:
    return ["steer-flux", "--prior", str(saved / "prior"), "--flux", str(saved / "flux"), "--sae", str(saved / "sae"),
            "--image", str(saved / "input.png"), "--steps", "2", "--size", str(SIZE), "--guidance", "0", "--device", "cpu", *extra]


def test_cli_writes_grid_and_report(saved, tmp_path, picture, baseline, capsys):
    from precompute.cli import main

    out = tmp_path / "grid.png"
    argv = _cli(saved, "--edit", "3=+80", "--edit", "7=0", "--units", "max", "--index", str(saved / "index.duckdb"),
                "--sweep", "0,1", "--out", str(out))
    assert main(argv) == 2  # feature 7 never fired (no max activation in the index): one line, nothing written
    err = capsys.readouterr().err.strip()
    assert "feature 7 never fired" in err and "\n" not in err and not out.exists()

    argv = _cli(saved, "--edit", "3=+80", "--units", "max", "--index", str(saved / "index.duckdb"), "--edit", "5=*2",
                "--sweep", "0,1", "--patches", "0,4", "--out", str(out))
    assert main(argv) == 0
    grid = Image.open(out)
    assert grid.size == (LABEL_W + 3 * SIZE, LABEL_H + SIZE)
    cells = [np.asarray(grid)[LABEL_H:, LABEL_W + i * SIZE:LABEL_W + (i + 1) * SIZE] for i in range(3)]
    assert np.array_equal(cells[1], baseline)  # strength 0: add 0, scale x1 -> the unsteered image
    assert not np.array_equal(cells[2], baseline)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["raw_edits"] == [{"feature_id": 3, "op": "add", "value": 200.0}, {"feature_id": 5, "op": "scale", "value": 2.0}]
    assert report["edits"][0] == {"feature_id": 3, "op": "add", "value": 80.0}
    assert (report["strengths"], report["seed"], report["patches"], report["patch_grid"]) == ([0.0, 1.0], 0, [0, 4], [3, 3])
    assert report["files"] == {"grid": "grid.png"} and report["layer"] == "redux"

    # the same strength-1 edit through the Python API, mask included, gives the same image
    prior, flux, sae = _load_prior(saved), _load_flux(saved), _load_sae(saved)
    image = Image.open(saved / "input.png").convert("RGB")
    with redux_edit(prior, sae, [Edit(3, "add", 200.0), Edit(5, "scale", 2.0)], patch_mask([0, 4], GRID)):
        direct = np.asarray(generate(flux, redux_condition(prior, image), GEN))
    assert np.array_equal(cells[2], direct)


def _load_prior(saved):
    return diffusers.FluxPriorReduxPipeline.from_pretrained(saved / "prior")


def _load_flux(saved):
    pipe = diffusers.FluxPipeline.from_pretrained(saved / "flux", text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_sae(saved):
    from sae_core.checkpoint import load

    return load(saved / "sae")


def test_cli_block_edit_and_bad_input_in_one_line(saved, tmp_path, capsys):
    from precompute.cli import main
    from sae_core.checkpoint import save

    flux_sae = tmp_path / "flux-sae"
    save(_sae(FLUX_D, 3), flux_sae)
    out = tmp_path / "block.png"
    argv = _cli(saved, "--sae", str(flux_sae), "--layer", "transformer_blocks.0.image", "--at-steps", "1",
                "--edit", "5=+50", "--sweep", "0,2", "--out", str(out))
    assert main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["layer"], report["at_steps"], report["patch_grid"]) == ("transformer_blocks.0.image", [1], [4, 4])
    cells = [np.asarray(Image.open(out))[LABEL_H:, LABEL_W + i * SIZE:LABEL_W + (i + 1) * SIZE] for i in (1, 2)]
    assert not np.array_equal(*cells)
    capsys.readouterr()

    bad = {
        ("--edit", "99=+1"): "feature 99 does not exist",
        ("--edit", "3=+1", "--sae", str(flux_sae)): "d_in=16 but SigLIP",
        ("--edit", "3=+1", "--patches", "9"): "patch 9 is not a cell of the 3x3 grid",
        ("--edit", "3=+1", "--sweep", "0,x"): "--sweep '0,x'",
        ("--edit", "3=+1", "--units", "max"): "--units max needs --index",
        ("--edit", "3=+1", "--out", str(tmp_path / "g.jpg")): "ending in .png",
        ("--edit", "3=+1", "--image", str(tmp_path / "none.png")): "not a readable image",
        ("--edit", "3=+1", "--prior", str(tmp_path)): "--prior",
        ("--edit", "3=+1", "--layer", "transformer_blocks.0.text", "--patches", "1"): "text stream",
        ("--edit", "3=+1", "--at-steps", "0"): "--at-steps is for FLUX block edits",
        (): "no edit given",
    }
    for extra, message in bad.items():
        assert main(_cli(saved, "--out", str(tmp_path / "bad.png"), *extra)) == 2, extra
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # diffusers' own loading bars may come first
        assert last.startswith("saescope steer-flux: error: ") and message in last and "Traceback" not in err, (extra, err)
    assert not list(tmp_path.glob("bad*"))


def test_cli_prompt_with_a_block_edit(tiny_pipeline, tmp_path, capsys):  # noqa: F811
    """Text-to-image FLUX (text encoders loaded): the block edit at step 1 changes the image,
    strength 0 is the plain generation from the prompt."""
    from precompute.cli import main
    from precompute.steer_flux import condition_for, load_flux
    from sae_core.checkpoint import save

    tiny_pipeline.save_pretrained(tmp_path / "t2i")
    save(_sae(FLUX_D, 3), tmp_path / "sae")
    out = tmp_path / "prompt.png"
    argv = ["steer-flux", "--flux", str(tmp_path / "t2i"), "--sae", str(tmp_path / "sae"), "--prompt", "a red cat",
            "--layer", "transformer_blocks.0.image", "--at-steps", "1", "--edit", "5=+50", "--sweep", "0,1",
            "--steps", "2", "--size", str(SIZE), "--guidance", "0", "--max-sequence-length", "16", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (LABEL_H + SIZE, LABEL_W + 2 * SIZE, 3)  # no input column
    cells = [grid[LABEL_H:, LABEL_W + i * SIZE:LABEL_W + (i + 1) * SIZE] for i in range(2)]
    gen = Generation(seed=0, steps=2, size=SIZE, guidance=0.0, max_sequence_length=16)
    flux = load_flux(str(tmp_path / "t2i"), "cpu", text_encoders=True)
    assert np.array_equal(cells[0], np.asarray(generate(flux, condition_for(None, "a red cat", gen), gen)))
    assert not np.array_equal(cells[0], cells[1])
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["prompt"], report["image"], report["prior"], report["grid_columns"]) == ("a red cat", None, None, [0.0, 1.0])
    capsys.readouterr()
    no_steps = [a for a in argv if a not in ("--at-steps", "1")]
    for call, message in [([*argv, "--image", "x.png"], "not both"), ([*no_steps, "--layer", "redux"], "with --prompt, edit a FLUX block")]:
        assert main(call) == 2
        assert message in capsys.readouterr().err

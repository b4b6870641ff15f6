"""Write the SAE interop fixtures in tests/fixtures/interop/ with the original libraries.

    python scripts/make_interop_fixtures.py [--out tests/fixtures/interop] [--venvs /tmp/saescope-interop-venvs]

For each library (SAELens, EleutherAI sparsify, saev, dictionary_learning) the script makes a
throwaway virtual environment, pip installs the library there, and runs itself inside it
(`--lib NAME`). There it builds small SAEs (d_in=16, d_sae=64, random weights from a fixed seed)
with the library's own classes, saves each with the library's own save function and writes
`expected.safetensors` next to it: an input batch `x` [8, 16], the library's latents `z`
[8, 64] (its `encode`) and reconstruction `x_hat` [8, 16] (its `decode(encode(x))`), computed on
the model as the library itself loads it back from disk.

The venvs see the running interpreter's site-packages (a .pth file), so the torch already
installed here is reused instead of downloading another one. Libraries that fail to install are
reported and skipped; the other fixtures are still written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

D_IN, D_SAE, BATCH, K, SEED = 16, 64, 8, 6, 0
LIBS = {"sae-lens": "sae-lens", "sparsify": "eai-sparsify", "saev": "saev", "dictionary_learning": "dictionary-learning"}
REPO = Path(__file__).resolve().parent.parent


# ---- driver (runs in the project's environment) -------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "interop")
    ap.add_argument("--venvs", type=Path, default=Path("/tmp/saescope-interop-venvs"))
    ap.add_argument("--lib", choices=sorted(LIBS), help="internal: write this library's fixtures with the current interpreter")
    ap.add_argument("--only", nargs="*", choices=sorted(LIBS), help="build these libraries only")
    args = ap.parse_args()
    if args.lib:
        import torch

        torch.set_num_threads(1)  # bit-identical fixtures from run to run
        BUILDERS[args.lib](args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for lib in args.only or LIBS:
        python = _venv_with(args.venvs / lib, LIBS[lib])
        if python is None or subprocess.run([str(python), __file__, "--lib", lib, "--out", str(args.out)]).returncode != 0:
            failed.append(lib)
    if failed:
        print(f"no fixtures for: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _venv_with(venv: Path, package: str) -> Path | None:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        # Reuse this interpreter's packages (torch above all); the venv's own installs take precedence.
        Path(purelib, "_saescope_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", package])
    if done.returncode != 0:
        print(f"pip install {package} failed; skipping it", file=sys.stderr)
        return None
    return python


# ---- helpers (run inside a library's venv) --------------------------------------------------
def _rng():
    import torch

    return torch.Generator().manual_seed(SEED)


def _randomize(module, gen, overrides: dict | None = None) -> None:
    """Fill every parameter/float buffer with seeded noise; `overrides` maps names to tensors."""
    import torch

    overrides = overrides or {}
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name in overrides:
                t.copy_(overrides[name])
            elif t.is_floating_point() and t.numel() > 1:
                scale = 0.3 if t.ndim == 1 else 1.0 / t.shape[0] ** 0.5 * 2
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * scale)


def _x(gen):
    import torch

    return torch.randn(BATCH, D_IN, generator=gen) * 1.5 + 0.2


def _thresholds(gen):
    """Per-latent thresholds, a few zero or negative to exercise the edge cases."""
    import torch

    thr = torch.rand(D_SAE, generator=gen) * 0.8
    thr[:3] = torch.tensor([0.0, -0.2, 0.0])
    return thr


def _write_expected(dpath: Path, x, z, x_hat, **meta) -> None:
    import torch
    from safetensors.torch import save_file

    dpath.mkdir(parents=True, exist_ok=True)
    tensors = {"x": x, "z": z, "x_hat": x_hat}
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}, str(dpath / "expected.safetensors"),
              metadata={"source": f"{meta['library']} {meta['version']}"})  # one key: safetensors' metadata order is random
    l0 = (z != 0).sum(-1).float().mean().item()
    print(f"wrote {dpath.name}: l0={l0:.1f}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# ---- SAELens -------------------------------------------------------------------------------
def build_sae_lens(out: Path) -> None:
    import sae_lens as sl
    import torch

    meta = {"library": "sae-lens", "version": _version("sae-lens")}
    gen = _rng()
    cases = {
        # apply_b_dec_to_input=False: the encoder does not subtract b_dec.
        "standard": (sl.StandardSAE, sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False), {}),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True), {}),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE), {"threshold": _thresholds(gen)}),
        "gated": (sl.GatedSAE, sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE), {}),
    }
    for arch, (cls, cfg, overrides) in cases.items():
        dpath = out / f"saelens-{arch}"
        shutil.rmtree(dpath, ignore_errors=True)
        sae = cls(cfg)
        _randomize(sae, gen, overrides)
        sae.save_model(dpath)
        _expect_sae_lens(dpath, sl.SAE.load_from_disk(dpath), gen, meta)

    # BatchTopK trains with a batch-level top-k and infers with a threshold: its training
    # checkpoint (save_model) stores `topk_threshold`; SAELens' inference form is a JumpReLU SAE.
    dpath = out / "saelens-batchtopk"
    shutil.rmtree(dpath, ignore_errors=True)
    sae = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    _randomize(sae, gen)
    sae.topk_threshold = torch.tensor(0.35, dtype=torch.double)
    sae.save_model(dpath)
    tmp = out / ".saelens-batchtopk-inference"
    sae.save_inference_model(tmp)
    _expect_sae_lens(dpath, sl.SAE.load_from_disk(tmp), gen, meta)
    shutil.rmtree(tmp)


def _expect_sae_lens(dpath: Path, sae, gen, meta: dict) -> None:
    import torch

    x = _x(gen)
    with torch.no_grad():
        z = sae.encode(x)
        x_hat = sae.decode(z)
    _write_expected(dpath, x, z, x_hat, **meta)


# ---- EleutherAI sparsify -------------------------------------------------------------------
def build_sparsify(out: Path) -> None:
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    meta = {"library": "eai-sparsify", "version": _version("eai-sparsify")}
    gen = _rng()
    dpath = out / "sparsify-topk"
    shutil.rmtree(dpath, ignore_errors=True)
    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K, normalize_decoder=False))
    _randomize(sae, gen)
    sae.save_to_disk(dpath)
    sae = SparseCoder.load_from_disk(dpath)
    x = _x(gen)
    with torch.no_grad():
        top_acts, top_indices, _ = sae.encode(x)
        z = torch.zeros(BATCH, D_SAE).scatter_(-1, top_indices, top_acts)
        x_hat = sae.decode(top_acts, top_indices)
    _write_expected(dpath, x, z, x_hat, **meta)


# ---- saev ------------------------------------------------------------------------------------
def build_saev(out: Path) -> None:
    import torch
    from saev import config, nn

    meta = {"library": "saev", "version": _version("saev")}
    gen = _rng()
    dpath = out / "saev-relu"
    shutil.rmtree(dpath, ignore_errors=True)
    sae = nn.SparseAutoencoder(config.SparseAutoencoder(d_vit=D_IN, exp_factor=D_SAE // D_IN))
    _randomize(sae, gen)
    nn.dump(str(dpath / "sae.pt"), sae)
    sae = nn.load(str(dpath / "sae.pt"))
    x = _x(gen)
    with torch.no_grad():
        x_hat, z, _ = sae(x)  # saev 0.1 has no public encode(); forward returns (x_hat, f_x, loss)
    _write_expected(dpath, x, z, x_hat, **meta)


# ---- dictionary_learning -------------------------------------------------------------------
def build_dictionary_learning(out: Path) -> None:
    import torch
    from dictionary_learning import dictionary as dl
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    meta = {"library": "dictionary-learning", "version": _version("dictionary-learning")}
    gen = _rng()
    thr = torch.tensor(0.3)
    cases = {
        # name: (model, config.json trainer section or None, loader)
        "relu": (dl.AutoEncoder(D_IN, D_SAE), "AutoEncoder",
                 lambda p: dl.AutoEncoder.from_pretrained(p, normalize_decoder=False)),
        "relu-new": (dl.AutoEncoderNew(D_IN, D_SAE), "AutoEncoderNew", dl.AutoEncoderNew.from_pretrained),
        "topk": (AutoEncoderTopK(D_IN, D_SAE, K), "AutoEncoderTopK", AutoEncoderTopK.from_pretrained),
        "batchtopk": (BatchTopKSAE(D_IN, D_SAE, K), "BatchTopKSAE", BatchTopKSAE.from_pretrained),
        "matryoshka": (MatryoshkaBatchTopKSAE(D_IN, D_SAE, K, [16, 16, 32]), "MatryoshkaBatchTopKSAE", None),
        "jumprelu": (dl.JumpReluAutoEncoder(D_IN, D_SAE), "JumpReluAutoEncoder", dl.JumpReluAutoEncoder.from_pretrained),
        "gated": (dl.GatedAutoEncoder(D_IN, D_SAE), "GatedAutoEncoder", dl.GatedAutoEncoder.from_pretrained),
    }
    for name, (ae, dict_class, loader) in cases.items():
        dpath = out / f"dictionary_learning-{name}"
        shutil.rmtree(dpath, ignore_errors=True)
        dpath.mkdir(parents=True)
        overrides = {"threshold": thr} if "topk" in name or name == "matryoshka" else {}
        if name == "jumprelu":
            overrides = {"threshold": _thresholds(gen)}
        _randomize(ae, gen, overrides)
        # What dictionary_learning.training.trainSAE writes: ae.pt (state dict) + config.json.
        torch.save({k: v.cpu() for k, v in ae.state_dict().items()}, dpath / "ae.pt")
        trainer = {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE}
        if hasattr(ae, "k"):
            trainer["k"] = int(ae.k)
        (dpath / "config.json").write_text(json.dumps({"trainer": trainer}, indent=4))
        if loader is not None:
            ae = loader(str(dpath / "ae.pt"))
        else:  # Matryoshka has no from_pretrained in this release
            state = torch.load(dpath / "ae.pt")
            ae = MatryoshkaBatchTopKSAE(D_IN, D_SAE, int(state["k"]), state["group_sizes"].tolist())
            ae.load_state_dict(state)
        x = _x(gen)
        with torch.no_grad():
            z = ae.encode(x)
            x_hat = ae.decode(z)
        _write_expected(dpath, x, z, x_hat, **meta)


BUILDERS = {"sae-lens": build_sae_lens, "sparsify": build_sparsify, "saev": build_saev, "dictionary_learning": build_dictionary_learning}

if __name__ == "__main__":
    sys.exit(main())

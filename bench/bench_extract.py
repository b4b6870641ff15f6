"""Extraction throughput: model-only forward vs end-to-end `extract()` (decode + resize + forward + write).

CPU default: EfficientNet-Lite0 on the demo's emoji (the demo configuration). With `--clip`, a
CLIP ViT-L/14 vision tower built from its config (random weights: same compute as the real one)
over synthetic 256 px JPEGs, the issue's GPU target (end-to-end >= 80% of model-only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from precompute.extract import ExtractConfig, extract  # noqa: E402
from precompute.extractors import build_extractor  # noqa: E402


def write_jpegs(dpath: Path, n: int, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    dpath.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(base, i, axis=1)).save(dpath / f"{i:06d}.jpg", quality=90)
    return dpath


def model_only(extractor, images: list, batch: int, n_batches: int, device: str) -> float:
    x = extractor.prepare(images[:batch])
    x = x.to(device) if isinstance(x, torch.Tensor) else x
    extractor.activations(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        extractor.activations(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return batch * n_batches / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clip", action="store_true", help="CLIP ViT-L/14 (random weights) instead of EfficientNet-Lite0")
    p.add_argument("--n", type=int, default=512, help="images for the end-to-end run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data-loader workers for decoding")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="CLIP's precision, as `saescope extract --model-dtype` (auto: bfloat16 on CUDA)")
    args = p.parse_args()
    model_dtype = args.model_dtype if args.model_dtype != "auto" else (
        "bfloat16" if args.clip and torch.device(args.device).type == "cuda" else "float32")
    dtype = getattr(torch, model_dtype)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    rows = []
    if args.clip:
        from transformers import CLIPVisionConfig, CLIPVisionModel

        folder = tmp / "hfclip"
        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               patch_size=14, image_size=224, projection_dim=768)
        CLIPVisionModel(cfg).save_pretrained(folder)
        spec, layer, tokens, dataset, size = f"hf:{folder}", "-2", "cls", str(write_jpegs(tmp / "jpegs", args.n)), 224
    else:
        spec, layer, tokens, dataset, size = "efficientnet-lite0", "head", "pooled", f"emoji:{args.n}", 128
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        extractor = build_extractor(spec, layer, tokens, device=args.device, image_size=size, dtype=dtype)
    load_s = time.perf_counter() - t0  # extract() loads the model again; its share is taken out below
    images = [Image.new("RGB", (256, 256), (i, 100, 200)) for i in range(args.batch)]
    fwd = model_only(extractor, images, args.batch, max(2, args.n // args.batch // 2), args.device)
    rows.append([f"{spec.split('/')[-1]} {layer}/{tokens} @ {size}px, {model_dtype}", "model only", f"{fwd:,.1f}"])
    t0 = time.perf_counter()
    result = extract(ExtractConfig(dataset=dataset, model=spec, layer=layer, tokens=tokens, image_size=size, batch_size=args.batch,
                                   num_workers=args.workers, device=args.device, data_root=str(tmp / "data"), dtype="bfloat16",
                                   model_dtype=model_dtype))
    e2e = result.n_samples / (time.perf_counter() - t0)
    rows.append(["", f"end to end ({args.workers} workers, incl. dataset + thumbnails)", f"{e2e:,.1f}"])
    t0 = time.perf_counter()
    import shutil

    shutil.rmtree(result.store_dpath)
    extract(ExtractConfig(dataset=dataset, model=spec, layer=layer, tokens=tokens, image_size=size, batch_size=args.batch,
                          num_workers=args.workers, device=args.device, data_root=str(tmp / "data"), dtype="bfloat16",
                                   model_dtype=model_dtype))
    e2e_warm = result.n_samples / (time.perf_counter() - t0 - load_s)
    rows.append(["", f"end to end ({args.workers} workers, dataset folder reused, model load excluded)", f"{e2e_warm:,.1f}"])
    rows.append(["", "end-to-end / model-only", f"{e2e_warm / fwd:.0%}"])
    print(machine())
    print_table(["model", "what", "images/s"], rows)


if __name__ == "__main__":
    main()

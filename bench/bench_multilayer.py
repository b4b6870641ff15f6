"""Several layers in one pass (`extract --layer a,b,c`) against one `extract` per layer.

Two configurations: the demo's two EfficientNet-Lite0 stores (head pooled + blocks.15 patches)
on the emoji at 128 px, and three blocks (-2, -6, -10) of a CLIP ViT-B/32-sized vision tower
built from its config (random weights, real compute) over synthetic 224 px JPEGs. Every run
starts from an empty data root with the dataset folder already built, so the times are model
load + decode + forward + write.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_extract import write_jpegs  # noqa: E402
from bench.common import machine, print_table  # noqa: E402
from precompute.extract import ExtractConfig, extract  # noqa: E402


def timed_runs(common: dict, layers: list[str], tokens: list[str], root: Path) -> tuple[float, float]:
    """(seconds for one extract per layer, seconds for one multi-layer extract), stores emptied in between."""
    extract(ExtractConfig(layer=layers[0], tokens=tokens[0], data_root=str(root), limit=1, **common))  # dataset + warm-up
    shutil.rmtree(root / "stores")
    t0 = time.perf_counter()
    for layer, tok in zip(layers, tokens):
        extract(ExtractConfig(layer=layer, tokens=tok, data_root=str(root), **common))
    separate = time.perf_counter() - t0
    shutil.rmtree(root / "stores")
    t0 = time.perf_counter()
    extract(ExtractConfig(layer=",".join(layers), tokens=",".join(tokens), data_root=str(root), **common))
    return separate, time.perf_counter() - t0


def clip_b32_folder(dpath: Path) -> Path:
    import transformers

    config = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                           image_size=224, patch_size=32)
    transformers.CLIPVisionModel(config).eval().save_pretrained(dpath)
    return dpath


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256, help="images per configuration")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = dict(dataset=f"emoji:{args.n}", model="efficientnet-lite0", image_size=128, device="cpu", batch_size=64)
        sep, one = timed_runs(demo, ["head", "blocks.15"], ["pooled", "patches"], tmp / "demo")
        rows.append(["EfficientNet-Lite0 head + blocks.15 (demo), 128 px", args.n, f"{sep:.1f}", f"{one:.1f}", f"{sep / one:.2f}x"])
        jpegs = write_jpegs(tmp / "jpegs", args.n, size=224)
        clip = dict(dataset=str(jpegs), model=f"hf:{clip_b32_folder(tmp / 'clip')}", device="cpu", batch_size=32)
        sep, one = timed_runs(clip, ["-2", "-6", "-10"], ["patches"] * 3, tmp / "clip-root")
        rows.append(["CLIP ViT-B/32-sized tower, -2,-6,-10 patches, 224 px", args.n, f"{sep:.1f}", f"{one:.1f}", f"{sep / one:.2f}x"])
    print(machine())
    print_table(["configuration", "images", "one extract per layer (s)", "one pass (s)", "speed-up"], rows)


if __name__ == "__main__":
    main()

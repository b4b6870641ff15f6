"""CUDA smoke run of every command on tiny data (issue #18, item 1): extract (tiny CLIP in
bfloat16), train (every architecture, bf16 autocast, a few steps), index, and the live worker's
inspect and steer. Prints one line per stage; any failure is printed and the run goes on."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS: list[tuple[str, str, float]] = []
DEVICE = os.environ.get("SMOKE_DEVICE", "cuda")


def stage(name):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                out = fn(*a, **k)
                RESULTS.append((name, "ok", time.perf_counter() - t0))
                return out
            except Exception as e:  # a smoke run reports every stage
                traceback.print_exc()
                RESULTS.append((name, f"FAILED {type(e).__name__}: {str(e)[:200]}", time.perf_counter() - t0))
                return None
        return run
    return wrap


def tiny_clip(folder: Path) -> None:
    import transformers

    cfg = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                        image_size=64, patch_size=16)
    transformers.CLIPVisionModel(cfg).eval().save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)


def images(folder: Path, n: int = 96) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


@stage("extract hf tiny CLIP bf16 (cls, patches)")
def do_extract(root: Path):
    from precompute.extract import ExtractConfig, extract

    out = {}
    for tokens in ("cls", "patches"):
        r = extract(ExtractConfig(dataset=str(root / "imgs"), model=f"hf:{root / 'clip'}", layer="-2", tokens=tokens,
                                  dtype="bfloat16", data_root=str(root / "data"), device=DEVICE, batch_size=32))
        out[tokens] = r.store_dpath
    return out


@stage("train all architectures, bf16 autocast")
def do_train(root: Path, stores: dict):
    from sae_core.config import SAEConfig
    from sae_core.training import TrainConfig, train

    runs = {}
    for arch in ("topk", "batchtopk", "relu", "jumprelu", "gated"):
        r = train(TrainConfig(store=str(stores["patches"]), out=str(root / "data" / "saes"), name=f"smoke-{arch}",
                              sae=SAEConfig(arch=arch, k=8, d_sae=256), batch_size=256, n_epochs=1.0, device=DEVICE,
                              precision="bfloat16"))
        runs[arch] = r.run_dpath
        print(f"  {arch}: explained variance {r.metrics.get('explained_variance')}")
    return runs


@stage("index (TopK patches + ReLU)")
def do_index(root: Path, stores: dict, runs: dict):
    from precompute.index import IndexConfig, build_index

    r = build_index(IndexConfig(saes=(str(runs["topk"]), str(runs["relu"])), out=str(root / "data" / "index" / "smoke.duckdb"),
                                device=DEVICE))
    return r.fpath


@stage("live worker: inspect + steer on CUDA")
def do_live(index: Path):
    from precompute.live.engine import LiveEngine
    from precompute.live.steer import steer
    from sae_core.steering import Edit

    eng = LiveEngine(index, DEVICE)
    ids = list(eng.specs)
    item = eng.sample(ids[0], 3)
    codes = eng.codes(ids, [item])[0]
    for sid, c in codes.items():
        top = c.feature_scores()[:3]
        print(f"  {sid}: {len(c.feature_scores())} features fire; top {top}")
        acts = c.acts
        out = steer(eng, sid, acts, [Edit(top[0][0], "add", 2.0)], "max", targets=["neighbors", "features"])
        print(f"  steer {sid}: neighbours {[n['sample_id'] for n in out['targets']['neighbors']['after'][:4]]}")


def main() -> None:
    assert DEVICE == "cpu" or torch.cuda.is_available(), "no CUDA device"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_clip(root / "clip")
        images(root / "imgs")
        stores = do_extract(root)
        runs = do_train(root, stores) if stores else None
        index = do_index(root, stores, runs) if runs else None
        if index:
            do_live(index)
    print("\n| stage | result | seconds |\n| --- | --- | --- |")
    for name, result, secs in RESULTS:
        print(f"| {name} | {result} | {secs:.1f} |")


if __name__ == "__main__":
    main()

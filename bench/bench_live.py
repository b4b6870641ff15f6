"""Live inspection and steering latency (issues #11 and #12).

CPU (default): real `saescope worker` and explorer processes over the demo index; one uploaded
image through EfficientNet-Lite0 and both demo SAEs (`inspect.json`), and steering requests on
each SAE (`steer.json`), timed server-side from the explorer's Server-Timing header; then 8
concurrent clients against 1 (throughput, errors).
`--clip-gpu`: in process on CUDA, a randomly initialised CLIP ViT-L/14 (the real model's FLOPs)
with a 65,536-latent TopK SAE on its penultimate layer's patches: decode + preprocess + forward +
encode per image, one client and 8 concurrent through the worker's batcher.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, print_table  # noqa: E402


def _png(seed: int, size: int = 256) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _emoji_png(i: int) -> bytes:
    from precompute.sources import EmojiSource

    buf = io.BytesIO()
    EmojiSource(limit=400).load(i).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _server_ms(r) -> float:
    timing = r.headers.get("server-timing", "app;dur=nan")
    return float(timing.split("dur=")[1])


def cpu_bench(index: Path, n: int) -> list[list]:
    import duckdb
    import httpx

    wport, aport = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "precompute.cli", "worker", str(index), "--port", str(wport)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = subprocess.Popen([sys.executable, "-m", "precompute.cli", "serve", str(index), "--port", str(aport),
                            "--live-url", f"http://127.0.0.1:{wport}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        _wait(f"http://127.0.0.1:{wport}/health")
        _wait(f"http://127.0.0.1:{aport}/health")
        with duckdb.connect(str(index), read_only=True) as con:
            saes = con.execute("SELECT sae_id, grid_h FROM saes ORDER BY grid_h NULLS FIRST").fetchall()
            top = {s: con.execute("SELECT feature_id FROM features WHERE sae_id = ? ORDER BY max_act DESC LIMIT 1", [s]).fetchone()[0]
                   for s, _ in saes}
        head, patch = saes[0][0], saes[-1][0]
        base = f"http://127.0.0.1:{aport}"
        client = httpx.Client(timeout=60)
        images = [_emoji_png(i) for i in range(40)]

        def inspect(i: int):
            return client.post(f"{base}/sae/{patch}/inspect.json", files={"image": ("x.png", images[i % len(images)], "image/png")},
                               data={"with": head})

        def steer(sae: str, i: int):
            edits = f'[{{"feature_id": {top[sae]}, "op": "add", "value": {1 + i % 3}}}]'
            return client.post(f"{base}/sae/{sae}/steer.json", data={"sample_id": str(i % 90), "edits": edits})

        for fn, label in ((lambda i: inspect(i), "inspect: upload, both SAEs (one forward for both layers)"),
                          (lambda i: steer(head, i), "steer head SAE (classes + neighbours)"),
                          (lambda i: steer(patch, i), "steer patch SAE (rest of EfficientNet + neighbours)")):
            for i in range(3):  # warm: models load on first use
                fn(i)
            times = []
            for i in range(n):
                r = fn(i)
                assert r.status_code == 200, r.text
                times.append(_server_ms(r))
            rows.append([label, f"{statistics.median(times):.0f}", f"{np.percentile(times, 99):.0f}", "1"])
        for clients in (1, 8):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(lambda i: inspect(i).status_code, range(n * 2)))
            secs = time.perf_counter() - t0
            errors = sum(s != 200 for s in results)
            rows.append([f"inspect throughput, {clients} concurrent client(s)", f"{len(results) / secs:.1f} req/s",
                         f"{errors} errors", str(clients)])
        health = client.get(f"http://127.0.0.1:{wport}/health").json()
        rows.append(["worker batches / requests", f"{health['batches']} / {health['requests']}", "", ""])
    finally:
        for p in (app, worker):
            p.terminate()
            p.wait(10)
    return rows


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gpu_bench(n: int, device: str = "cuda") -> list[list]:
    import torch
    import transformers

    from precompute.extractors.hf import build_hf_extractor
    from precompute.live.batcher import Batcher
    from precompute.live.engine import LiveEngine
    from precompute.live.inputs import LiveInput, decode_image
    from precompute.live.specs import LiveSae
    from sae_core.config import SAEConfig
    from sae_core.model import SparseAutoencoder

    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14)).eval()
    model = model.to(device, torch.bfloat16)
    spec = LiveSae(sae_id="clip-l14", title="random CLIP ViT-L/14 -2 patches", model="hf:random-clip-l14", layer="-2",
                   token_selection="patches", grid=(16, 16), d_in=1024, d_sae=65536, image_size=224, model_dtype="bfloat16",
                   modality="image", checkpoint=Path(__file__), store=Path("/nonexistent"), dataset_dpath=Path("/nonexistent"),
                   dataset_id="none")
    eng = LiveEngine(None, device, specs={spec.sae_id: spec})
    eng._extractors[spec.layer_key] = build_hf_extractor(model, "-2", "patches", device=device, dtype=torch.bfloat16)
    eng._saes[spec.sae_id] = SparseAutoencoder(SAEConfig(arch="topk", k=32, d_in=1024, d_sae=65536)).to(device).eval()
    pngs = [_png(i, 384) for i in range(16)]

    def one(i: int):
        return eng.codes([spec.sae_id], [LiveInput(decode_image(pngs[i % len(pngs)]), "image")])

    for i in range(5):
        one(i)
    _sync(device)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        one(i)
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    rows = [["CLIP ViT-L/14 + 65,536-latent SAE, one image (decode..codes)", f"{statistics.median(times):.1f}",
             f"{np.percentile(times, 99):.1f}", "1"]]
    batcher = Batcher(max_batch=8, max_queue=256)
    for clients in (1, 8):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            futs = list(pool.map(lambda i: batcher.submit(("codes",), [LiveInput(decode_image(pngs[i % 16]), "image")],
                                                          lambda items: eng.codes([spec.sae_id], items)).result(60), range(n * 2)))
        secs = time.perf_counter() - t0
        rows.append([f"throughput, {clients} concurrent client(s) through the batcher", f"{len(futs) / secs:.1f} img/s", "",
                     str(clients)])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", default=str(ROOT / "data" / "index" / "demo.duckdb"), help="demo index (saescope demo builds it)")
    p.add_argument("--n", type=int, default=40, help="timed requests per row")
    p.add_argument("--clip-gpu", action="store_true", help="random CLIP ViT-L/14 + 65,536-latent SAE on CUDA, in process")
    p.add_argument("--device", default="cuda", help="device of --clip-gpu (cpu only to check the script)")
    args = p.parse_args()
    print(machine())
    rows = gpu_bench(args.n, args.device) if args.clip_gpu else cpu_bench(Path(args.index), args.n)
    print_table(["what", "p50 ms (server-side) / rate", "p99 ms / errors", "clients"], rows)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()

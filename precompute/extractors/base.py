"""The interface every model family implements for `saescope extract`.

An extractor turns a batch of raw inputs (PIL images or caption strings) into activations of one
layer, shaped [batch, tokens_per_sample, d_in]. Extraction, the store writer and the CLI only
talk to this interface, so adding a model family touches one module and the registry.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from sae_core.errors import ConfigError


@dataclass(frozen=True)
class ExtractorInfo:
    """What the store manifest records about the activations an extractor produces."""

    model: str
    """Model spec as given on the command line, e.g. `efficientnet-lite0`."""
    model_revision: str | None
    """Weights revision or content hash, when known."""
    layer: str
    """Module path or layer name that was hooked."""
    token_selection: str
    """`pooled`, `cls`, `patches` or `all`."""
    tokens_per_sample: int
    """Rows stored per sample (1 for pooled or CLS)."""
    grid: tuple[int, int] | None
    """Patch grid (h, w) when tokens are patches, else None."""
    d_in: int
    """Activation width."""
    modality: str
    """`image` or `text`: what `prepare` accepts."""
    input_side: int | None = None
    """Side in pixels the model's input is resized to (image models), so decoding can stop early."""


class Extractor(abc.ABC):
    """A frozen model with a hook on one layer."""

    info: ExtractorInfo

    @abc.abstractmethod
    def prepare(self, inputs: list) -> object:
        """CPU-side preprocessing of raw inputs (PIL images or strings) into a model batch.

        Runs in data-loader workers, so it must not touch the GPU.
        """

    @abc.abstractmethod
    def activations(self, batch: object) -> torch.Tensor:
        """Forward a prepared batch; return float activations [batch, tokens_per_sample, d_in]."""

    @property
    def generates_images(self) -> bool:
        """Whether `generated_images()` returns the images the model drew (FLUX): extraction then
        keeps them as the samples' images."""
        return False

    def generated_images(self) -> list | None:
        """Images the model produced for the last batch (FLUX), to keep as the samples' images."""
        return None


class ExtractorError(ConfigError):
    """A model spec, layer or token selection that cannot be honoured."""

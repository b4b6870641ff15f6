"""sae_core: sparse autoencoder models, training and checkpoints (pure torch, no web stack).

Imports are lazy so `import sae_core` stays fast; torch loads on first use of a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sae_core.contract import SAESCOPE_VERSION as __version__
from sae_core.contract import SCHEMA_VERSION

_LAZY = {
    "SAEConfig": "sae_core.config",
    "SparseAutoencoder": "sae_core.model",
    "SparseCode": "sae_core.model",
    "ForwardOutput": "sae_core.model",
    "ActivationStore": "sae_core.store",
    "StoreWriter": "sae_core.store",
    "load": "sae_core.checkpoint",
    "save": "sae_core.checkpoint",
    "TrainConfig": "sae_core.training",
    "train": "sae_core.training",
}

__all__ = ["SCHEMA_VERSION", "__version__", *_LAZY]

if TYPE_CHECKING:
    from sae_core.checkpoint import load, save
    from sae_core.config import SAEConfig
    from sae_core.model import ForwardOutput, SparseAutoencoder, SparseCode
    from sae_core.store import ActivationStore, StoreWriter
    from sae_core.training import TrainConfig, train


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sae_core' has no attribute {name!r}")

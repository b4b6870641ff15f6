"""SAE architecture configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from sae_core.errors import ConfigError
from sae_core.validate import check_numbers

Arch = Literal["topk", "batchtopk", "relu", "jumprelu", "gated"]
ARCHS: tuple[str, ...] = ("topk", "batchtopk", "relu", "jumprelu", "gated")


@dataclass(frozen=True)
class SAEConfig:
    """Shape and sparsity mechanism of a sparse autoencoder."""

    arch: Arch = field(default="topk", metadata={"help": "activation: topk, batchtopk, relu (L1), jumprelu or gated"})
    d_in: int = field(default=0, metadata={"help": "input width (taken from the store when 0)"})
    d_sae: int = field(default=0, metadata={"help": "number of latents (expansion * d_in when 0)"})
    expansion: int = field(default=8, metadata={"help": "d_sae = expansion * d_in when d_sae is not given"})
    k: int = field(default=32, metadata={"help": "active latents per token for topk/batchtopk"})
    l1_coeff: float = field(default=5.0, metadata={"help": "L1 weight (relu, gated), penalty weighted by decoder norms"})
    l0_coeff: float = field(default=1e-3, metadata={"help": "L0 penalty weight for jumprelu"})
    jumprelu_bandwidth: float = field(default=0.05, metadata={"help": "rectangle-kernel width of jumprelu pseudo-gradients"})
    jumprelu_init_threshold: float = field(default=0.1, metadata={"help": "initial jumprelu threshold"})
    aux_k: int = field(default=0, metadata={"help": "dead latents used by the AuxK loss (d_in // 2 when 0, topk family)"})
    aux_coeff: float = field(default=1 / 32, metadata={"help": "weight of the AuxK loss (0 turns it off)"})
    init: Literal["tied", "orthonormal"] = field(default="tied", metadata={"help": "tied: W_enc = W_dec^T with unit rows; orthonormal rows"})

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r} is unknown; choose one of {', '.join(ARCHS)}")
        if self.d_in < 0 or self.d_sae < 0 or self.expansion <= 0:
            raise ConfigError("d_in, d_sae and expansion must be positive")
        if self.arch in ("topk", "batchtopk"):
            if self.k <= 0:
                raise ConfigError(f"k={self.k} must be positive")
            if self.d_sae and self.k > self.d_sae:
                raise ConfigError(f"k={self.k} is larger than d_sae={self.d_sae}; lower k or raise d_sae")
        if self.init not in ("tied", "orthonormal"):
            raise ConfigError(f"init={self.init!r} is unknown; choose tied or orthonormal")
        check_numbers(self, non_negative=("l1_coeff", "l0_coeff", "aux_coeff", "aux_k"))
        for name in ("jumprelu_bandwidth", "jumprelu_init_threshold"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")

    def resolved(self, d_in: int) -> SAEConfig:
        """Fill d_in and d_sae from the data; checks the result again."""
        if self.d_in and self.d_in != d_in:
            raise ConfigError(f"SAE d_in={self.d_in} does not match the activations' width {d_in}")
        return dataclasses.replace(self, d_in=d_in, d_sae=self.d_sae or self.expansion * d_in)

    @property
    def is_topk_family(self) -> bool:
        return self.arch in ("topk", "batchtopk")

    @property
    def n_aux(self) -> int:
        return self.aux_k or max(1, self.d_in // 2)

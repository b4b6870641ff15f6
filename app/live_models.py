"""Response models of live inspection and steering (the JSON twins of the inspect page)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.models import SaeSummary, SampleRef


class LiveFeature(BaseModel):
    feature_id: int
    title: str
    name: str | None = None
    name_score: float | None = None
    activation: float = Field(description="score: the maximum over the input's tokens (what the index ranks by)")
    relative: float | None = Field(default=None, description="activation / the feature's maximum over the indexed data")
    max_act: float | None = None
    token: int = Field(description="token (grid cell, row-major) where the feature peaks")
    url: str
    heatmap: list[float] | None = Field(default=None, description="grid_h*grid_w activations, row-major (patch SAEs)")
    thumbs: list[SampleRef] = Field(default_factory=list, description="the feature's first top samples")


class LiveSaeResult(BaseModel):
    sae: SaeSummary
    grid: list[int] | None = Field(description="[h, w] of the patch grid; null for one-token SAEs")
    n_tokens: int
    n_firing: int = Field(description="features with a positive activation anywhere on the input")
    region: list[int] | None = Field(default=None, description="the tokens the ranking is restricted to")
    features: list[LiveFeature] = Field(description="sorted by activation, highest first")
    entries: dict[str, list] = Field(description="the sparse code: parallel lists token, feature, value")


class InspectView(BaseModel):
    sae: SaeSummary
    input: dict
    grid: list[int] | None
    features: list[LiveFeature]
    results: list[LiveSaeResult] = Field(description="this SAE first, then the other SAEs asked for (same model, one forward)")


class SteerView(BaseModel):
    sae: SaeSummary
    input: dict
    units: str
    patches: list[int]
    edits: list[dict] = Field(description="the edits applied, values in raw latent units")
    before: dict = Field(description="per target (classes, neighbors, features): what the model gives without the edit")
    after: dict = Field(description="the same targets with the edit")
    compare: list[dict] | None = Field(default=None, description="classes: probability before and after, for bars")


class InspectPage(BaseModel):
    """The inspect page before any input: the SAE, whether the worker answers, SAEs that can be shown beside it."""

    sae: SaeSummary
    live: dict = Field(description="{ok, message}: the worker's state in one line")
    sample_id: int | None = None
    same_model: list[SaeSummary] = Field(default_factory=list)
    max_upload_mb: float

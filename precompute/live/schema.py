"""The worker's HTTP responses as pydantic models, so its OpenAPI schema (`GET /openapi.json` on
the worker) documents them: the contract between the explorer and the worker."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerSae(BaseModel):
    model: str
    layer: str
    token_selection: str
    grid: list[int] | None
    modality: str
    live: bool = Field(description="whether this worker can run the SAE")
    problem: str | None = Field(description="why not, when it cannot")


class WorkerHealth(BaseModel):
    status: str
    index: str
    device: str
    saes: dict[str, WorkerSae]
    loaded: list[str] = Field(description="models (and layers) loaded so far")
    queue: dict[str, int] = Field(description="pending requests and the bound")
    batches: int
    requests: int


class CodeFeature(BaseModel):
    feature_id: int
    activation: float = Field(description="max over the input's tokens")
    token: int = Field(description="where it peaks (row-major grid cell)")


class CodeResult(BaseModel):
    grid: list[int] | None
    n_tokens: int
    features: list[CodeFeature] = Field(description="every feature with a positive activation, highest first")
    entries: dict[str, list] = Field(description="the sparse code: parallel lists token, feature, value")


class InspectResponse(BaseModel):
    input: dict = Field(description="kind (image, text, sample), sample_id, width, height")
    results: dict[str, CodeResult] = Field(description="per SAE id, in the order asked")


class SteerResponse(BaseModel):
    input: dict
    sae_id: str
    units: str
    patches: list[int]
    edits: list[dict] = Field(description="the edits applied, values in raw latent units")
    targets: dict[str, dict] = Field(description="per target (classes, neighbors, features): {before, after}; classes also has compare")


class ConceptHit(BaseModel):
    feature_id: int
    cosine: float = Field(description="cosine of the feature's decoder direction, carried into the joint space, with the text's embedding")


class ConceptSearchResponse(BaseModel):
    sae_id: str
    text: str
    space: str = Field(description="the joint space: CLIP or SigLIP")
    prompt: str = Field(description="what was embedded: the text in the vocabulary's prompt template")
    features: list[ConceptHit] = Field(description="nearest features that fired, highest cosine first")

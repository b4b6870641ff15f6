"""Response models: one per resource, shared by each HTML page and its JSON twin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(description="ok, or unhealthy (HTTP 503) when the index file is bad; `problem` says why")
    schema_version: int
    n_saes: int
    inputs_hash: str | None = Field(default=None, description="index_meta inputs_hash of the index being served")
    built_at: str = Field(description="schema_version.created_at of the index being served")
    problem: str | None = None


class SaeSummary(BaseModel):
    sae_id: str
    title: str
    dataset_id: str
    modality: str
    model: str | None
    layer: str | None
    token_selection: str | None
    arch: str | None
    d_in: int | None
    d_sae: int
    k: int | None
    grid_h: int | None
    grid_w: int | None
    n_samples: int | None
    n_tokens: int | None
    l0: float | None
    explained_variance: float | None
    fvu: float | None
    dead_fraction: float | None = Field(description="share of features that never fire on any token of the indexed store")
    dead_pct: float | None
    is_patch: bool
    url: str
    heldout_explained_variance: float | None = Field(default=None, description="on the tokens training held out (checkpoint metrics)")
    heldout_fvu: float | None = None
    heldout_l0: float | None = None
    heldout_never_fired: float | None = Field(default=None, description="share of features that never fire on the held-out tokens")
    heldout_n_tokens: int | None = None
    training_dead_fraction: float | None = Field(default=None, description="share of features dead by the trainer's counters at the end of training")


class SaeList(BaseModel):
    data: list[SaeSummary]
    count: int
    examples: dict[str, list[FeatureCard]] = Field(
        default_factory=dict, description="per sae_id, a few clear features from different clusters (home page)")


class SampleRef(BaseModel):
    """A dataset sample as shown in a gallery tile."""

    sample_id: int
    activation: float | None = None
    caption: str | None = None
    label: str | None = None
    thumb_url: str | None = None
    url: str
    heatmap: list[float] | None = Field(default=None, description="grid_h*grid_w activations, row-major")


class FeatureSummary(BaseModel):
    feature_id: int
    name: str | None
    title: str = Field(description="name, 'maybe <name>' when the name is weak, or 'feature N' when unnamed")
    name_score: float | None = Field(default=None, description="activation-weighted share of the top samples carrying the name's leading word (0..1)")
    name_coverage: float | None = Field(default=None, description="top samples carrying the leading word / min(dataset samples carrying it, top samples)")
    name_weak: bool = Field(default=False, description="name_score below the index's weak-name threshold (0.5)")
    density: float | None
    n_fired: int | None
    mean_act: float | None
    max_act: float | None
    label_entropy: float | None
    top_label: str | None
    cluster_id: int | None
    url: str


class FeatureCard(FeatureSummary):
    """Hover card on the map: stats plus a few top samples."""

    top: list[SampleRef]
    top_label_fraction: float | None = Field(default=None, description="home page examples: share of the 16 top samples "
                                             "carrying top_label (then their most common label)")


class FeatureTable(BaseModel):
    """One page of an SAE's feature table; `state` (sort, order, filters, ids, limit, offset) is the URL's."""

    sae: SaeSummary
    data: list[FeatureSummary]
    count: int = Field(description="features matching the filters (all pages)")
    limit: int
    offset: int
    query: str = Field(description="the state as a query string, pagination left out")
    state: dict[str, Any]
    prev_url: str | None
    next_url: str | None
    csv_url: str
    json_url: str
    sort_urls: dict[str, str] = Field(description="per sortable column, the link sorting by it (toggling the order)")


class QuantileBin(BaseModel):
    bin: int
    lo: float | None = None
    """Activation range of the bin, (lo, hi]; None when the index does not record its bin count."""
    hi: float | None = None
    samples: list[SampleRef]


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class LabelCount(BaseModel):
    label: str | None
    count: int
    fraction: float


class Neighbor(BaseModel):
    feature_id: int
    title: str
    cosine: float = Field(description="cosine similarity of the two features' decoder directions")
    url: str
    thumbs: list[SampleRef]


class CoNeighbor(BaseModel):
    """A feature firing on the same samples (co-activation over the whole store)."""

    feature_id: int
    title: str
    jaccard: float = Field(description="samples both fire on / samples either fires on")
    n_both: int = Field(description="samples both fire on")
    url: str
    thumbs: list[SampleRef]


class Concept(BaseModel):
    """A class the model's later layers read from the feature, or a word near it in CLIP/SigLIP space (concept projection)."""

    kind: str = Field(description="promotes or suppresses (classifiers); closest (method joint)")
    concept: str = Field(description="the classifier's class name, or (joint) an ImageNet class name or a word of the shipped list")
    score: float = Field(description="decoder: logit change from 0 to max activation; ablation: mean logit drop when the feature is "
                                     "removed from its top samples; joint: cosine with the word's text embedding in the joint space")
    method: str = Field(description="decoder, ablation or joint")


class FeatureView(BaseModel):
    sae: SaeSummary
    feature: FeatureSummary
    top: list[SampleRef]
    quantiles: list[QuantileBin]
    hist: Histogram
    labels: list[LabelCount]
    neighbors: list[Neighbor]
    coactivation: list[CoNeighbor] = Field(default_factory=list, description="features firing on the same samples, by Jaccard index (any SAE size; index_meta coactivation_undercount bounds n_both when not exact)")
    coactivation_undercount: int = Field(default=0, description="0: co-activation counts are exact; else pairs sharing at most this many samples were dropped and n_both may be this much too low")
    concepts: list[Concept] = Field(default_factory=list, description="empty unless the model is a classifier or a CLIP/SigLIP image tower")
    alignment: FeatureAlignment | None = Field(default=None, description="None unless the hooked layer's neurons are known")
    prev_url: str | None
    next_url: str | None
    random_url: str


class Cluster(BaseModel):
    cluster_id: int
    name: str | None
    size: int | None
    x: float
    y: float


class ExplorerView(BaseModel):
    sae: SaeSummary
    feature_clusters: list[Cluster]
    sample_clusters: list[Cluster]
    features_bin: str
    samples_bin: str
    n_features: int
    n_map_samples: int


class CurvePoint(BaseModel):
    step: int
    n_tokens: int | None
    loss: float | None
    fvu: float | None
    l0: float | None
    dead_fraction: float | None


class ScatterPoint(BaseModel):
    feature_id: int
    log_density: float
    log_mean_act: float
    label_entropy: float | None


class AlignmentView(BaseModel):
    """Neuron alignment of an SAE's features against random directions (same bins)."""

    n_neurons: int
    threshold: float = Field(description="cosine a random direction exceeds on 1% of the neurons")
    edges: list[float] = Field(description="bins of the maximum cosine with any neuron")
    features: list[int] = Field(description="features per bin")
    random: list[int] = Field(description="random directions per bin")
    n_aligned: int = Field(description="features whose best neuron beats every random direction's best")
    random_max: float = Field(description="largest maximum cosine of any random direction")


class LowDensityView(BaseModel):
    """Features far below the others in density, and whether they are one direction."""

    size: int
    gap_decades: float = Field(description="decades of density between the cluster and the rest")
    mean_pairwise_cos: float | None = Field(description="mean cosine of the members' encoder directions")
    feature_ids: list[int] = Field(description="the first 50 members")


class FeatureAlignment(BaseModel):
    max_cos: float
    best_neuron: int
    n_above: int = Field(description="neurons above the random baseline's 99th-percentile cosine")
    threshold: float
    n_neurons: int
    cosines: list[float] | None = Field(description="cosine with each neuron, by neuron index (rounded to 1/127)")


class DashboardView(BaseModel):
    sae: SaeSummary
    n_dead: int
    density_hist: Histogram = Field(description="counts over log10(density) bins of firing features")
    scatter: list[ScatterPoint] = Field(description="firing features, subsampled to at most 4000")
    curve: list[CurvePoint]
    alignment: AlignmentView | None = None
    low_density: LowDensityView | None = None


class SampleFeature(BaseModel):
    rank: int
    feature_id: int
    title: str
    activation: float
    url: str
    heatmap: list[float] | None
    thumbs: list[SampleRef]


class SampleView(BaseModel):
    sae: SaeSummary
    sample: SampleRef
    source: str | None
    features: list[SampleFeature]


class SearchHit(FeatureSummary):
    score: float
    matches: int = Field(description="top samples whose caption or label matched")
    terms_matched: int = Field(default=0, description="distinct query words the feature matched")
    top: list[SampleRef] = Field(default_factory=list, description="the feature's first top samples")


class MeaningResults(BaseModel):
    """Features ranked by meaning: the cosine between the query's text embedding and their decoder
    directions carried into CLIP/SigLIP's joint space (asked of the live worker)."""

    space: str = Field(description="CLIP or SigLIP")
    prompt: str = Field(description="what was embedded: the query in the vocabulary's prompt template")
    data: list[SearchHit] = Field(description="nearest features that fired, highest cosine first (`score` is the cosine); filters do not apply")


class SearchView(BaseModel):
    sae: SaeSummary
    q: str
    page: int
    page_size: int
    count: int
    n_pages: int
    data: list[SearchHit]
    n_terms: int = Field(default=0, description="distinct words searched (0 for an id)")
    n_all: int = Field(default=0, description="results matching every word; they come first")
    filters: dict[str, str | float | int] = Field(default_factory=dict, description="the filters and sort in use "
                                                  "(min_density, max_density, cluster, label, sort), as in the URL")
    redirect: str | None = Field(default=None, description="where the HTML page redirects: the feature page "
                                                           "for an id, or the last page when `page` is past the end")
    meaning: MeaningResults | None = Field(default=None, description="first page of word searches on CLIP/SigLIP SAEs "
                                           "while the live worker is up: features nearest the words by meaning; else null")


class SearchGroup(BaseModel):
    """One SAE's first results in a search across SAEs."""

    sae: SaeSummary
    count: int = Field(description="results in this SAE")
    n_all: int = Field(default=0, description="of them, results matching every word")
    data: list[SearchHit] = Field(description="the first results, ranked as on the SAE's own search page")
    more_url: str = Field(description="this SAE's own search, same words and filters, for every result")


class GlobalSearchView(BaseModel):
    """A search across every SAE of the index (or those of one arch and/or model)."""

    q: str
    filters: dict[str, str | float | int] = Field(default_factory=dict, description="the filters and sort in use "
                                                  "(arch, model, min_density, max_density, label, sort), as in the URL")
    archs: list[str] = Field(description="architectures the index's SAEs have (the arch filter's choices)")
    models: list[str] = Field(description="models the index's SAEs were trained on (the model filter's choices)")
    n_saes: int = Field(description="SAEs searched (those passing arch and model)")
    n_saes_all: int = Field(description="SAEs in the index")
    count: int = Field(description="results over all groups")
    n_terms: int = Field(default=0, description="distinct words searched (0 for an id)")
    groups: list[SearchGroup] = Field(description="SAEs with results, best answering first")


class GameView(BaseModel):
    sae: SaeSummary
    token: str
    clues: list[FeatureCard]
    candidates: list[SampleRef]


class GameAnswer(BaseModel):
    sae: SaeSummary
    correct: bool
    pick: int
    answer: SampleRef
    next_url: str


SaeList.model_rebuild()

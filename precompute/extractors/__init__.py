"""Model registry: turns a model spec from the command line into an `Extractor`.

Specs: `efficientnet-lite0` (packaged weights), `hf:<name or folder>` (transformers CLIP/SigLIP),
`diffusers:<name or folder>` (FLUX, optional extra), `open_clip:<architecture or folder>` (open_clip
ViT image towers, optional extra; weights from `pretrained`). Heavy libraries load only when named.
"""

from __future__ import annotations

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo
from precompute.extractors.identity import canonical_spec, local_folder
from precompute.extractors.quiet import quiet_loaders
from sae_core.errors import SaescopeError

__all__ = ["Extractor", "ExtractorError", "ExtractorInfo", "build_extractor", "build_extractors"]


def build_extractor(spec: str, layer: str, token_selection: str, *, device: str = "cpu",
                    image_size: int | None = None, modality: str = "image", dtype=None,
                    revision: str | None = None, verbose: bool = False, pretrained: str | None = None) -> Extractor:
    """`dtype` (a torch dtype) applies to hf: towers; None keeps float32. `revision`: a hub
    branch, tag or commit (hf:/diffusers: hub names only). `pretrained`: an open_clip tag or
    checkpoint file (open_clip: architectures only). The libraries' loading reports and
    download bars show only when `verbose`."""
    if revision and not spec.startswith(("hf:", "diffusers:")):
        raise ExtractorError(f"--revision {revision!r} applies to hf:/diffusers: hub models, not {spec!r}")
    if revision and local_folder(spec) is not None:
        raise ExtractorError(f"--revision {revision!r}: {spec} is a local folder, whose files' hash is its revision; drop --revision")
    if pretrained and not spec.startswith("open_clip:"):
        raise ExtractorError(f"--pretrained {pretrained!r} applies to open_clip: architectures, not {spec!r}")
    if spec.startswith("open_clip:"):
        from precompute.extractors.open_clip_vit import build_open_clip_extractor

        with quiet_loaders(verbose):
            return build_open_clip_extractor(canonical_spec(spec), layer, token_selection, pretrained=pretrained or None,
                                             device=device, image_size=image_size, modality=modality)
    with quiet_loaders(verbose):
        return _build(canonical_spec(spec), layer, token_selection, device=device, image_size=image_size,
                      modality=modality, dtype=dtype, revision=revision or None)


def build_extractors(spec: str, layers: list[tuple[str, str]], **kwargs) -> list[Extractor]:
    """One extractor per (layer, token selection), sharing one loaded model where the family allows
    (`hf:` towers); `kwargs` as for `build_extractor`."""
    first = build_extractor(spec, *layers[0], **kwargs)
    model = getattr(first, "model", None) or getattr(first, "tower", None)
    if not spec.startswith("hf:") or model is None:
        return [first] + [build_extractor(spec, layer, tokens, **kwargs) for layer, tokens in layers[1:]]
    from precompute.extractors.hf import build_hf_extractor

    tokenizer = getattr(getattr(first, "prepare_fn", None), "tokenizer", None)
    processor = getattr(getattr(first, "prepare_fn", None), "processor", None)
    others = []
    with quiet_loaders(kwargs.get("verbose", False)):
        for layer, tokens in layers[1:]:
            others.append(build_hf_extractor(model, layer, tokens, device=kwargs.get("device", "cpu"), image_size=kwargs.get("image_size"),
                                             dtype=next(model.parameters()).dtype, modality=kwargs.get("modality"), processor=processor,
                                             tokenizer=tokenizer, revision=first.info.model_revision, spec=first.info.model))
    for ex in others:  # every layer sees the batch the first one prepares
        ex.prepare_fn = first.prepare_fn
    return [first, *others]


def _build(spec: str, layer: str, token_selection: str, *, device: str, image_size: int | None, modality: str,
           dtype, revision: str | None) -> Extractor:
    if spec == "efficientnet-lite0":
        from precompute.extractors.efficientnet import EfficientNetExtractor

        return EfficientNetExtractor(layer, token_selection, image_size=image_size or 224, device=device)
    if spec == "minilm":
        from precompute.extractors.minilm import MiniLMExtractor

        return MiniLMExtractor(layer, token_selection, device=device)
    if spec.startswith(("hf:", "diffusers:")):
        name = spec.split(":", 1)[1]
        if not name:
            raise ExtractorError(f"model {spec!r} names no model; e.g. hf:openai/clip-vit-large-patch14 or hf:/path/to/folder")
        try:
            if spec.startswith("hf:"):
                import torch

                from precompute.extractors.hf import build_hf_extractor

                return build_hf_extractor(name, layer, token_selection, device=device, image_size=image_size, modality=modality,
                                          dtype=dtype or torch.float32, revision=revision, spec=spec)
            from precompute.extractors.flux import build_flux_extractor

            return build_flux_extractor(name, layer, token_selection, device=device, image_size=image_size, revision=revision,
                                        spec=spec)
        except SaescopeError:
            raise
        except (OSError, ValueError) as e:  # the libraries' own loaders: missing files, no network, bad config
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExtractorError(f"cannot load {spec}: {first} (offline, give a local folder written by save_pretrained)") from None
    raise ExtractorError(f"model {spec!r} is unknown; use efficientnet-lite0, hf:<name or folder>, diffusers:<name or folder> "
                         "or open_clip:<architecture or folder>")

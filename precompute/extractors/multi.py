"""Several layers of one model in one forward pass (`saescope extract --layer -2,-8,-14`).

Each layer keeps its own extractor (so its tokens, shapes and manifest are exactly those of a
single-layer run) but the model is loaded once and, for hook-based extractors, run once with a
hook on every layer, stopping after the deepest. EfficientNet shares its stem and blocks the same
way; other families fall back to one forward per layer on the same decoded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from precompute.extractors.base import Extractor, ExtractorError
from precompute.extractors.module import ModuleExtractor, _StopForward, move_batch


def split_layers(layer: str, tokens: str) -> list[tuple[str, str]]:
    """`"-2,-8", "cls"` -> [("-2", "cls"), ("-8", "cls")]; one token selection per layer or one for all."""
    layers = [part.strip() for part in layer.split(",")]
    selections = [part.strip() for part in tokens.split(",")]
    if any(not part for part in layers + selections):
        raise ExtractorError(f"--layer {layer!r} / --tokens {tokens!r}: an empty item; separate layers with commas, e.g. -2,-8,-14")
    if len(set(layers)) != len(layers):
        raise ExtractorError(f"--layer {layer!r} names a layer twice")
    if len(selections) == 1:
        selections = selections * len(layers)
    if len(selections) != len(layers):
        raise ExtractorError(f"--tokens {tokens!r} gives {len(selections)} selections for {len(layers)} layers; give one, or one per layer")
    return list(zip(layers, selections))


class MultiLayerExtractor:
    """The extractors of several layers, fed by one decoded batch; `activations` returns one tensor per layer."""

    def __init__(self, extractors: Sequence[Extractor]) -> None:
        self.extractors = list(extractors)
        sides = {e.info.input_side for e in self.extractors}
        if len(sides) > 1:
            raise ExtractorError(f"the layers resize inputs differently ({sorted(map(str, sides))}); extract them separately")
        if any(e.generates_images for e in self.extractors) and len(self.extractors) > 1:
            raise ExtractorError("several layers in one pass is not available for image-generating models; run one extract per layer")
        self.info = self.extractors[0].info

    @property
    def generates_images(self) -> bool:
        return self.extractors[0].generates_images

    def generated_images(self) -> list | None:
        return self.extractors[0].generated_images()

    def prepare(self, inputs: list) -> Any:
        return self.extractors[0].prepare(inputs)

    def activations(self, batch: Any) -> list[torch.Tensor]:
        first = self.extractors[0]
        if len(self.extractors) == 1:
            return [first.activations(batch)]
        if all(isinstance(e, ModuleExtractor) and e.model is first.model for e in self.extractors):
            return _one_pass(self.extractors, batch)
        shared = getattr(first, "activations_many", None)
        if shared is not None and all(type(e) is type(first) for e in self.extractors):
            return shared(batch, self.extractors)
        return [e.activations(batch) for e in self.extractors]


@torch.inference_mode()
def _one_pass(extractors: list[ModuleExtractor], batch: Any) -> list[torch.Tensor]:
    """One forward with every layer's hook; stops once the last of them has fired."""
    first = extractors[0]
    batch = move_batch(batch, first.device, first.dtype)
    captures = [e.capture for e in extractors]
    handles = []
    for cap in captures:
        cap.captured, cap.n_calls, cap.stop = None, 0, False
        if cap.pre:
            handles.append(cap.module.register_forward_pre_hook(_armed(cap, captures, pre=True), with_kwargs=True))
        else:
            handles.append(cap.module.register_forward_hook(_armed(cap, captures, pre=False)))
    try:
        first.forward_fn(first.model, batch)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
        for cap in captures:
            cap.stop = True
    missing = [e.info.layer for e, cap in zip(extractors, captures) if cap.captured is None]
    if missing:
        raise ExtractorError(f"layers {missing} never ran during the forward; are they on the model's forward path?")
    return [e.finish(cap.captured) for e, cap in zip(extractors, captures)]


def _armed(cap, captures, pre: bool):
    """A hook that records into `cap` and ends the forward when every capture holds its tensor."""
    def hook(module, args, *rest):
        if pre:
            cap._record(args if args else rest[0])
        else:
            cap._record(rest[0])
        if all(c.captured is not None for c in captures):
            raise _StopForward
    return hook

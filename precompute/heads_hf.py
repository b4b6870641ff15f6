"""Classifier tails for transformers image classifiers (`hf:` ViT, DINOv2, ConvNeXt, ResNet
`*ForImageClassification`): the model from a hooked layer to its logits, on stored activations.

Which (layer, token selection) can be fed onwards:
- ViT / DINOv2: `all` tokens of any block (the remaining blocks, the final layernorm, the head);
  ViT also `cls` of the last block or of `last_hidden_state` (its head reads only CLS).
- ConvNeXt / ResNet: `patches` of any stage (the remaining stages, the pooling, the head), and
  `pooled` of the last stage or `pooler`.
Elsewhere (pooled inner layers, DINOv2's CLS alone) the tail is None. Where the logits are one
linear map of the stored token (`last_hidden_state` CLS of ViT, ResNet's pooled features,
ConvNeXt's `pooler`), `linear` carries it for concept projection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from precompute.heads import ClassifierTail, grid_from_tokens


def hf_classifier_tail(model: str, layer: str, token_selection: str, device: str, module: nn.Module | None) -> ClassifierTail | None:
    """`precompute.heads` builder: a tail for `hf:` image classifiers, None for every other model."""
    if not model.startswith("hf:"):
        return None
    net = module if module is not None and hasattr(module, "classifier") else _load_classifier(model[3:])
    if net is None:
        return None
    net = net.to(device).eval()
    config = net.config
    names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
    if config.model_type in ("convnext", "resnet"):
        run_linear = _convnet_tail(net, layer, token_selection)
    elif config.model_type in ("vit", "dinov2", "dinov2_with_registers"):
        run_linear = _vit_tail(net, layer, token_selection)
    else:
        return None
    return None if run_linear is None else ClassifierTail(names, *run_linear)


def _load_classifier(path: str) -> nn.Module | None:
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError):  # a hub name not in the local cache, offline: no classes to offer
        return None
    if not any(a.endswith("ForImageClassification") for a in (config.architectures or [])):
        return None
    from precompute.extractors.quiet import quiet_loaders

    with quiet_loaders():
        return transformers.AutoModelForImageClassification.from_pretrained(path)


def _linear_of(head: nn.Module) -> tuple[Tensor, Tensor] | None:
    linear = head if isinstance(head, nn.Linear) else next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    return None if linear is None else (linear.weight.detach(), linear.bias.detach())


def _vit_tail(net: nn.Module, layer: str, token_selection: str):
    from precompute.extractors.hf import resolve_layer
    from precompute.extractors.hf_vit import backbone, blocks_path

    tower = backbone(net)
    n = tower.config.num_hidden_layers
    blocks = tower.get_submodule(blocks_path(tower))
    is_vit = tower.config.model_type == "vit"
    n_registers = int(getattr(tower.config, "num_register_tokens", 0) or 0)

    def head(x: Tensor) -> Tensor:  # x: [batch, tokens, d] after the final layernorm
        if is_vit:
            return net.classifier(x[:, 0])
        return net.classifier(torch.cat([x[:, 0], x[:, 1 + n_registers:].mean(dim=1)], dim=1))

    if layer == "last_hidden_state":
        if token_selection == "all":
            return (lambda acts: head(acts.to(_dtype(net)))), None
        if token_selection == "cls" and is_vit:
            return (lambda acts: net.classifier(acts[:, 0].to(_dtype(net)))), _linear_of(net.classifier)
        return None
    if layer == "pooler":
        return None
    path, pre = resolve_layer(layer, n, "b")
    first = int(path.split(".")[1]) + (0 if pre else 1)
    if token_selection == "cls" and is_vit and first == n:
        return (lambda acts: net.classifier(tower.layernorm(acts[:, 0].to(_dtype(net))))), None
    if token_selection != "all":
        return None

    def run(acts: Tensor) -> Tensor:
        x = acts.to(_dtype(net))
        for block in blocks[first:]:
            out = block(x)
            x = out[0] if isinstance(out, tuple) else out
        return head(tower.layernorm(x))

    return run, None


def _convnet_tail(net: nn.Module, layer: str, token_selection: str):
    from precompute.extractors.hf_convnet import stage_path
    from precompute.extractors.hf_vit import backbone

    tower = backbone(net)
    is_convnext = tower.config.model_type == "convnext"
    stages = tower.encoder.stages

    def pool_head(pooled: Tensor) -> Tensor:  # pooled: [batch, channels], the spatial mean
        return net.classifier(tower.layernorm(pooled) if is_convnext else pooled)

    if layer == "pooler":
        return (lambda acts: net.classifier(acts[:, 0].to(_dtype(net)))), _linear_of(net.classifier)
    path = stage_path(tower, layer)
    first = 0 if not path.startswith("encoder.stages.") else int(path.rsplit(".", 1)[1]) + 1
    if token_selection == "pooled":
        if first != len(stages):
            return None  # an inner stage's mean loses the map the next stage needs
        return (lambda acts: pool_head(acts[:, 0].to(_dtype(net)))), None if is_convnext else _linear_of(net.classifier)
    if token_selection not in ("patches", "all"):
        return None

    def run(acts: Tensor) -> Tensor:
        x = grid_from_tokens(acts.to(_dtype(net)))
        for stage in stages[first:]:
            x = stage(x)
        return pool_head(x.mean(dim=(2, 3)))

    return run, None


def _dtype(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype

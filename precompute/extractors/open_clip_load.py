"""Loading open_clip models (`open_clip:<architecture>` + `--pretrained`, or `open_clip:<folder>`)
and naming their weights for the store identity.

Forms:
- `open_clip:ViT-B-32 --pretrained laion2b_s34b_b79k`: a built-in architecture with one of its
  pretrained tags (open_clip fetches it through the Hugging Face cache); the revision is
  `<tag>@<hub commit>` when the cache tells, else a content hash of the weights file;
- `open_clip:ViT-B-32 --pretrained /path/weights.pt`: a checkpoint file; revision = its SHA-256,
  so the file's path never enters the store id;
- `open_clip:/path/folder`: a folder as open_clip's `local-dir:` reads it (`open_clip_config.json`
  with `model_cfg`, plus a weights file), identified by the hash of its files.

Random weights are never used: an architecture without `--pretrained` is an error.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

from precompute.extractors.base import ExtractorError
from precompute.extractors.identity import folder_hash

INSTALL_HINT = "pip install 'saescope[openclip]' (open_clip_torch, timm, ftfy)"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_keep_alive: list = []  # torch.library fragments must outlive the import


def import_open_clip() -> Any:
    """`import open_clip`, or a one-line install hint.

    A CPU-only torch paired with PyPI's torchvision (built against CUDA torch) cannot load
    torchvision's compiled operators, and torchvision 0.28 then fails at import while registering
    fake kernels for `nms`/`qnms`. open_clip only needs torchvision's transforms, so the two
    operator schemas are declared (never called) and the import is retried once.
    """
    try:
        import open_clip
    except ModuleNotFoundError as e:
        raise ExtractorError(f"open_clip models need the {e.name} package; {INSTALL_HINT}") from None
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        _declare_torchvision_schemas()
        import open_clip
    return open_clip


def _declare_torchvision_schemas() -> None:
    import torch

    for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip")]:
        del sys.modules[name]  # the half-finished import
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _keep_alive.append(lib)


def file_hash(fpath: Path) -> str:
    with open(fpath, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def resolve_weights(open_clip: Any, name: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """(open_clip model name, pretrained argument, revision) for a spec's name and `--pretrained`;
    every mistake is a one-line `ExtractorError` before anything is loaded."""
    path = Path(name).expanduser()
    if path.is_dir():
        if pretrained:
            raise ExtractorError(f"open_clip:{name} is a folder, which holds its weights; drop --pretrained {pretrained!r}")
        if not (path / "open_clip_config.json").is_file():
            raise ExtractorError(f"open_clip:{name}: no open_clip_config.json in the folder; save one with the model_cfg "
                                 "(open_clip's hub layout) or give an architecture name with --pretrained FILE")
        if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
            raise ExtractorError(f"open_clip:{name}: no weights file (*.safetensors, *.bin, *.pth) in the folder")
        return f"local-dir:{path.resolve()}", None, folder_hash(path.resolve())
    if "/" in name or name.startswith(("~", ".")):
        raise ExtractorError(f"open_clip:{name}: no such folder; give an existing folder or an architecture such as ViT-B-32")
    if name not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if m.lower().startswith(name.lower()[:5])][:6] or ["ViT-B-32", "ViT-L-14"]
        raise ExtractorError(f"open_clip:{name} is not an open_clip architecture; e.g. {near} (open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not pretrained:
        raise ExtractorError(f"open_clip:{name} needs --pretrained: a checkpoint file or one of its tags {tags[:6]}")
    fpath = Path(pretrained).expanduser()
    if fpath.is_file():
        return name, str(fpath.resolve()), file_hash(fpath)
    if pretrained not in tags:
        raise ExtractorError(f"--pretrained {pretrained!r}: no such file, nor a tag of {name} (tags: {tags[:8]})")
    return name, pretrained, _tag_revision(open_clip, name, pretrained)


def _tag_revision(open_clip: Any, name: str, tag: str) -> str:
    """`<tag>@<commit>` from the Hugging Face cache path of the downloaded weights, else their hash."""
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    try:
        fpath = Path(download_pretrained(get_pretrained_cfg(name, tag)))
    except Exception as e:  # hub and network errors come in many types; all mean "not available here"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExtractorError(f"open_clip:{name} --pretrained {tag}: cannot get the weights ({first}); "
                             "offline, give a downloaded checkpoint file as --pretrained") from None
    parts = fpath.parts
    if len(parts) >= 3 and parts[-3] == "snapshots":
        return f"{tag}@{parts[-2]}"
    return f"{tag}@{file_hash(fpath)}"


@functools.lru_cache(maxsize=1)
def load_model(model_name: str, pretrained: str | None, revision: str, device: str, image_size: int | None) -> tuple[Any, Any]:
    """(model, eval preprocess), cached per weights revision so several layers share one model
    (and so one forward pass, `precompute.extractors.multi`)."""
    open_clip = import_open_clip()
    kwargs = {"force_image_size": image_size} if image_size else {}
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device, **kwargs)
    except Exception as e:  # a user's file: wrong keys or shapes, not a checkpoint (unpickling), unreadable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExtractorError(f"cannot load open_clip {model_name} with {pretrained or 'its folder weights'}: {first[:300]}") from None
    return model.eval(), preprocess

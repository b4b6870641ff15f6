"""Hub datasets by name from the local `datasets` cache: `--dataset hf:owner/name[:split]`.

A dataset loaded once online with `datasets.load_dataset("owner/name")` leaves Arrow files under
`$HF_DATASETS_CACHE/owner___name/<config>/<version>/<hash>/`. This reads them through
`datasets`' own `Cache` builder, which only looks at that folder: the network is never touched,
whatever HF_DATASETS_OFFLINE says (the same files `load_dataset` would use offline). A dataset
that is not there is a one-line error saying how to cache it. Columns are read as for
`save_to_disk` folders (`precompute.sources.HFDiskSource`): images as PIL or bytes, caption and
label columns by `--caption-col` / `--label-col`.

Forms: `hf:owner/name` (split `train`, else the first), `hf:owner/name:split`,
`hf:owner/name:config:split` (a dataset cached with several configs).
"""

from __future__ import annotations

import os
from pathlib import Path

from precompute.sources import HFDiskSource
from sae_core.errors import DataError


def parse_hub_dataset(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:owner/name:config:split` -> (repo, config, split); missing parts are None."""
    parts = spec.removeprefix("hf:").split(":")
    repo = parts[0]
    if not repo or repo.count("/") > 1 or len(parts) > 3 or any(not p for p in parts):
        raise DataError(f"--dataset {spec}: use hf:owner/name, hf:owner/name:split or hf:owner/name:config:split")
    config, split = (parts[1], parts[2]) if len(parts) == 3 else (None, parts[1] if len(parts) == 2 else None)
    return repo, config, split


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps prepared datasets: HF_DATASETS_CACHE, else $HF_HOME/datasets, else
    the library's default (read at call time, so a test or a shell can point elsewhere)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE)


def open_cached_hub_dataset(spec: str, image_col: str = "image", caption_col: str = "caption",
                            label_col: str = "label") -> HFDiskSource:
    """The cached dataset's split as a source, or a one-line `DataError`."""
    try:
        import datasets
        from datasets.packaged_modules.cache.cache import Cache
    except ImportError:
        raise DataError(f"--dataset {spec}: hub datasets by name need `pip install datasets`") from None
    repo, config, split = parse_hub_dataset(spec)
    cache_dir = datasets_cache_dir()
    how = (f"cache it once online with `python -c \"import datasets; datasets.load_dataset('{repo}')\"` "
           f"(HF_DATASETS_CACHE={cache_dir}), or give a save_to_disk folder")
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # its "found the latest cached configuration" notice is noise here
    try:
        builder = Cache(cache_dir=str(cache_dir), repo_id=repo, dataset_name=repo.split("/")[-1], config_name=config,
                        version="auto", hash="auto")
    except ValueError as e:  # "Couldn't find cache for owner/name", or several configs cached
        detail = " ".join(str(e).split())
        raise DataError(f"--dataset {spec}: not in the local datasets cache ({detail}); {how}") from None
    finally:
        datasets.logging.set_verbosity(level)
    splits = list((builder.info.splits or {}).keys())
    split = split or ("train" if "train" in splits or not splits else splits[0])
    if splits and split not in splits:
        raise DataError(f"--dataset {spec}: no split {split!r} in the cache; cached splits: {splits}")
    try:
        ds = builder.as_dataset(split=split)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"--dataset {spec}: the cached files are incomplete ({str(e).splitlines()[0]}); {how}") from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"--dataset {spec}: name one split, e.g. hf:{repo}:train")
    root = Path(ds.cache_files[0]["filename"]).parent if ds.cache_files else cache_dir
    where = split if builder.config.name == "default" else f"{builder.config.name}:{split}"
    name = f"hf:{repo}[{where}]"
    return HFDiskSource(root, image_col=image_col, caption_col=caption_col, label_col=label_col, loaded=ds, name=name)

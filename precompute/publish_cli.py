"""`saescope publish`: options, the feature-list parser and the one-paragraph report."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from sae_core.errors import ConfigError

RANGE_RE = re.compile(r"(\d+)(?:-(\d+))?")
MAX_IDS = 1 << 24


def parse_feature_list(spec: str) -> tuple[int, ...]:
    """'1,4,7-9' or @FILE holding ids and ranges (commas, spaces or lines) -> sorted distinct ids."""
    if spec.startswith("@"):
        try:
            spec = Path(spec[1:]).read_text()
        except OSError as e:
            raise ConfigError(f"--features {spec}: cannot read it ({e.strerror})") from None
    ids: set[int] = set()
    for part in filter(None, re.split(r"[\s,]+", spec.strip())):
        m = RANGE_RE.fullmatch(part)
        if not m:
            raise ConfigError(f"--features: {part!r} is not a feature id or range like 7-9")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or len(ids) + hi - lo + 1 > MAX_IDS:
            raise ConfigError(f"--features: {part!r} must run low-high, at most {MAX_IDS:,} ids in all")
        ids.update(range(lo, hi + 1))
    if not ids:
        raise ConfigError("--features: no ids given; e.g. --features 0-99,257 or --features @ids.txt")
    return tuple(sorted(ids))


def add_publish_parser(sub) -> None:
    p = sub.add_parser("publish", help="write the explorer as a static site (GitHub Pages, HF Space, S3, any folder)")
    p.add_argument("index", help="index file written by `saescope index`")
    p.add_argument("out", help="site folder to write; re-publishing updates only what changed")
    p.add_argument("--sae", dest="saes", action="append", metavar="SAE_ID", help="publish only this SAE (repeat)")
    p.add_argument("--features", metavar="IDS", help="feature ids per SAE: 0-99,257 or @FILE (default: all)")
    p.add_argument("--top-samples", type=int, metavar="N", help="top samples shown per feature page (default: as served)")
    p.add_argument("--thumb-size", type=int, default=0, metavar="PX", help="re-encode thumbnails to this longest side (default: copy)")
    p.add_argument("--thumb-quality", type=int, default=80, metavar="Q", help="WebP quality of re-encoded thumbnails (default: 80)")
    p.add_argument("--game-rounds", type=int, default=20, metavar="N", help="precomputed game rounds per SAE (default: 20; 0: none)")
    p.add_argument("--base-url", metavar="URL", help="absolute URL the site lives at (default: relative links, any base path)")
    p.add_argument("--workers", type=int, default=0, help="processes rendering pages (default: one per core, at most 8)")
    p.add_argument("--to", metavar="hf://spaces/OWNER/NAME", help="then upload the folder to a Hugging Face Space or dataset")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> None:
    from precompute.publish import PublishConfig, fmt_bytes, publish
    from precompute.publish_hub import parse_target

    target = parse_target(args.to) if args.to else None  # a bad --to fails before the work
    cfg = PublishConfig(
        index=Path(args.index), out=Path(args.out), saes=tuple(args.saes or ()),
        features=parse_feature_list(args.features) if args.features else None, top_samples=args.top_samples,
        thumb_size=args.thumb_size, thumb_quality=args.thumb_quality,
        game_rounds=args.game_rounds, base_url=args.base_url, workers=args.workers)
    res = publish(cfg)
    what = "unchanged" if res.skipped else f"{len(res.written):,} files written, {len(res.removed):,} removed"
    print(f"site {res.out}: {res.n_files:,} files, {fmt_bytes(res.n_bytes)} ({what}); "
          f"try it: python -m http.server -d {res.out} 8000")
    for w in res.warnings:
        logging.getLogger(__name__).warning(f"warning: {w}")
    if target:
        from precompute.publish_hub import upload

        print(upload(res.out, target))

"""The `saescope` command: extract, train, index, serve, demo, info and verify as subcommands.

Known problems (`SaescopeError`, and OS errors such as a full disk) print one line and exit 2;
anything else is a bug: one line naming it and exit 1 (`SAESCOPE_DEBUG=1` re-raises it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from precompute.cli_args import add_config_option, add_dataclass_args, dataclass_from_args, parse_args
from precompute.cli_logging import add_logging_options, configure_logging
from sae_core.errors import SaescopeError

log = logging.getLogger(__name__)


def _is_main_rank() -> bool:
    """Under torchrun every rank runs the command; only rank 0 reports."""
    return int(os.environ.get("RANK", "0")) == 0


def _cmd_extract(args: argparse.Namespace) -> None:
    from precompute.extract import ExtractConfig, extract

    result = extract(dataclass_from_args(ExtractConfig, args))
    if _is_main_rank():
        for dpath in result.store_dpaths or (result.store_dpath,):  # one store per --layer
            print(f"{'reused' if result.reused else 'wrote'} store {dpath} ({result.n_samples} samples)")


def _cmd_train(args: argparse.Namespace) -> None:
    from precompute.info import fmt_number
    from sae_core.training import TrainConfig, train

    result = train(dataclass_from_args(TrainConfig, args))
    m = result.metrics
    if _is_main_rank():  # a reused run may hold partial metrics: those show as '-'
        print(f"{'reused' if result.reused else 'trained'} {result.run_dpath}: explained variance "
              f"{fmt_number(m.get('explained_variance'), '.4f')}, L0 {fmt_number(m.get('l0'), '.2f')}, "
              f"dead {fmt_number(m.get('dead_fraction'), '.1f', 100)}%")


def _cmd_index(args: argparse.Namespace) -> None:
    from precompute.index import IndexConfig, build_index

    args.saes = tuple(args.saes or ())
    result = build_index(dataclass_from_args(IndexConfig, args))
    if _is_main_rank():
        print(f"{'reused' if result.reused else 'wrote'} index {result.fpath} with SAEs {', '.join(result.sae_ids)}")


def _serve(index: str, host: str, port: int, workers: int = 1, live: bool = True, live_url: str | None = None) -> None:
    """Start the explorer (and a live worker beside it); an index the app cannot read is a one-line user error."""
    from sae_core.validate import check_host, check_workers

    check_host(host)  # before the app's imports: a typo costs no start-up time
    check_workers(workers)
    from app.db import Index
    from app.errors import IndexSchemaError
    from app.main import check_port_free, serve
    from precompute.cli_live import resolve_live_url

    if not Path(index).is_file():
        raise SaescopeError(f"{index}: no such index; build one with `saescope index` or `saescope demo`")
    try:
        check_port_free(host, port)  # a taken port or a bad index fails before a worker is started
        Index(Path(index)).close()
        serve(index, host=host, port=port, workers=workers, live_url=resolve_live_url(index, live, live_url))
    except IndexSchemaError as e:
        raise SaescopeError(str(e)) from None


def _cmd_serve(args: argparse.Namespace) -> None:
    _serve(args.index, args.host, args.port, args.workers, args.live, args.live_url)


def _cmd_demo(args: argparse.Namespace) -> None:
    from precompute.demo import DemoConfig, build_demo

    cfg = dataclass_from_args(DemoConfig, args)
    if cfg.text:
        from precompute.text_demo import build_text_demo

        index = build_text_demo(cfg.data_root, cfg.limit)
    else:
        index = build_demo(cfg)
    if cfg.serve:
        log.info(f"serving the explorer on http://{cfg.host}:{cfg.port}/ (Ctrl-C stops it)")
        _serve(str(index), cfg.host, cfg.port)


def _cmd_verify(args: argparse.Namespace) -> None:
    from precompute.verify import verify

    print(verify(Path(args.path)))


def _cmd_export(args: argparse.Namespace) -> None:
    from precompute.export import ExportConfig, export_sae

    print(f"wrote {args.format} checkpoint {export_sae(dataclass_from_args(ExportConfig, args))}")


def _cmd_info(args: argparse.Namespace) -> None:
    from precompute.info import describe

    print(describe(Path(args.path)))


def _cmd_steer_flux(args: argparse.Namespace) -> None:
    from precompute.steer_flux_cli import SteerFluxConfig, run_steer_flux

    args.edits = tuple(args.edits or ())
    result = run_steer_flux(dataclass_from_args(SteerFluxConfig, args))
    print(f"wrote {result.grid_fpath} ({result.n_images} generated images) and {result.report_fpath}")


def _port(text: str) -> int:
    from sae_core.validate import check_port

    try:
        return check_port(int(text))
    except (ValueError, SaescopeError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)") from e


def build_parser() -> argparse.ArgumentParser:
    from precompute.demo import DemoConfig
    from precompute.extract import ExtractConfig
    from precompute.index import IndexConfig
    from sae_core.training import TrainConfig

    parser = argparse.ArgumentParser(prog="saescope", description="Explore sparse-autoencoder features of vision and diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("extract", help="run a model over a dataset and write an activation store")
    add_dataclass_args(p, ExtractConfig)
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("train", help="train an SAE on an activation store (torchrun for several GPUs)")
    add_dataclass_args(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("index", help="scan a store through SAEs and write the explorer's DuckDB index")
    p.add_argument("--sae", dest="saes", action="append", metavar="PATH", help="SAE checkpoint folder (repeat for several)")
    add_dataclass_args(p, IndexConfig, skip=("saes",))
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("serve", help="serve the web explorer for an index")
    p.add_argument("index", help="index file written by `saescope index`")
    p.add_argument("--host", default=os.environ.get("SAESCOPE_HOST", "127.0.0.1"), help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=int(os.environ.get("SAESCOPE_PORT", "8000")), help="port (default: 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, 1 or more (default: 1)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                   help="start a live-inspection worker beside the explorer when the index's models load here (default: on)")
    p.add_argument("--live-url", default=os.environ.get("SAESCOPE_LIVE_URL"),
                   help="use the worker at this URL (http://HOST:PORT or unix:/path) instead of starting one")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="build the offline demo (EfficientNet-Lite0 on emoji) and serve it")
    add_dataclass_args(p, DemoConfig)
    p.set_defaults(func=_cmd_demo)

    from precompute.cli_live import add_live_commands

    add_live_commands(sub, _port)

    from precompute.export import ExportConfig

    p = sub.add_parser("export", help="write an SAE as a SAELens or sparsify checkpoint (input scale folded into the weights)")
    add_dataclass_args(p, ExportConfig)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("info", help="summarise an SAE checkpoint, activation store, dataset or index")
    p.add_argument("path", help="checkpoint folder, store folder, dataset folder or .duckdb index")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("verify", help="check a store's shards or an SAE checkpoint byte for byte against their recorded checksums")
    p.add_argument("path", help="store folder or checkpoint folder")
    p.set_defaults(func=_cmd_verify)

    from precompute.steer_flux_cli import SteerFluxConfig

    p = sub.add_parser("steer-flux", help="edit SAE features inside FLUX Redux (or a FLUX block) and write a grid of generated images")
    p.add_argument("--edit", dest="edits", action="append", metavar="FEATURE=VALUE",
                   help="12=+3 adds, 12=-3 subtracts, 12=3 sets, 40=0 clamps, 12=*2 scales (repeat to compose)")
    add_dataclass_args(p, SteerFluxConfig, skip=("edits",))
    p.set_defaults(func=_cmd_steer_flux)

    from precompute.publish_cli import add_publish_parser

    add_publish_parser(sub)
    add_config_option(sub)  # every command reads --config FILE.toml
    add_logging_options(sub)  # and takes --log-level / -q / -v
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)  # --config FILE.toml supplies defaults; flags win
    restore_logging = _no_restore
    try:
        restore_logging = configure_logging(getattr(args, "log_level", None))
        args.func(args)
    except SaescopeError as e:
        _report(f"saescope {args.command}: error: {e}")
        return 2
    except KeyboardInterrupt:
        _report("interrupted; re-run the same command to resume")
        return 130
    except OSError as e:  # disk full, read-only or missing folders: the user's to fix, not a bug
        _report(f"saescope {args.command}: error: {_os_message(e)}")
        return 2
    except Exception as e:
        if type(e).__module__.split(".")[0].lstrip("_") == "duckdb" and not os.environ.get("SAESCOPE_DEBUG"):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            _report(f"saescope {args.command}: error: {first} (a damaged or unwritable DuckDB file: rebuild it with `saescope index`)")
            return 2  # a DuckDB file that cannot be read or written is the user's to fix, not a bug
        if os.environ.get("SAESCOPE_DEBUG"):
            raise
        _report(f"saescope {args.command}: internal error: {type(e).__name__}: {e} "
                "(SAESCOPE_DEBUG=1 shows the traceback; please report it)")
        return 1
    finally:
        restore_logging()
    return 0


def _no_restore() -> None:
    """What `main` undoes when logging was never configured (a bad --log-level)."""


def _report(line: str) -> None:
    """One line on stderr, after a newline if a progress bar was left half-drawn."""
    from tqdm import tqdm

    if getattr(tqdm, "_instances", None):
        print(file=sys.stderr)
    print(line, file=sys.stderr)


def _os_message(e: OSError) -> str:
    import errno

    where = f"{e.filename}: " if e.filename else ""
    hint = {errno.ENOSPC: "; free some space or choose another --data-root/--out",
            errno.EROFS: "; choose a writable --data-root/--out", errno.EACCES: "; check its permissions",
            errno.ENOTDIR: "; a file is where a folder is expected", errno.EISDIR: "; a folder is where a file is expected",
            }.get(e.errno, "")
    return f"{where}{e.strerror or e}{hint}"


if __name__ == "__main__":
    sys.exit(main())

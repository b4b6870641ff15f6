"""Build argparse options from frozen config dataclasses, so `--help` is the config's documentation.

Each field's `metadata["help"]` becomes its help text; nested dataclasses (TrainConfig.sae) are
flattened into the same namespace. A field without help text is a bug (tests check this).
`parse_args` adds `--config run.toml` to every subcommand: the file's keys (option names, with
`-` or `_`) become that command's defaults, so flags on the command line still win.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            add_dataclass_args(parser, hint, skip)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": f"{help_text} (default: {default!r})"}
        choices = _literal_choices(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif choices:
            kwargs["choices"] = choices
        elif hint in (int, float, str):
            kwargs["type"] = hint
        parser.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = dataclass_from_args(hint, args)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def _literal_choices(hint: Any) -> list | None:
    if get_origin(hint) is Literal:
        return list(get_args(hint))
    return None


CONFIG_HELP = "TOML file of this command's options (keys as the option names: layer = \"-2\", batch_size = 256); flags given win"


def add_config_option(sub: argparse._SubParsersAction) -> None:
    """`--config FILE.toml` on every subcommand."""
    for parser in sub.choices.values():
        parser.add_argument("--config", metavar="FILE.toml", default=None, help=CONFIG_HELP)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse once to find the command and its --config, then again over the file's values as
    defaults. A bad file is one line on stderr and exit 2, like argparse's own errors."""
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    try:
        sub.set_defaults(**config_defaults(sub, Path(args.config)))
    except ValueError as e:
        print(f"saescope {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return parser.parse_args(argv)


def config_defaults(parser: argparse.ArgumentParser, fpath: Path) -> dict[str, Any]:
    """The TOML file's values keyed by argparse dest, checked against the command's options."""
    try:
        raw = tomllib.loads(fpath.read_text())
    except OSError as e:
        raise ValueError(f"--config {fpath}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config {fpath}: not valid TOML ({e})") from None
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise ValueError(f"--config {fpath}: unknown option {key!r}; options are {', '.join(sorted(actions))}")
        out[dest] = _checked(fpath, key, value, action)
    return out


def _checked(fpath: Path, key: str, value: Any, action: argparse.Action) -> Any:
    want = action.type if action.type in (int, float, str) else None
    if isinstance(action, argparse.BooleanOptionalAction):
        want = bool
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise ValueError(f"--config {fpath}: {key} must be a list, e.g. {key} = [\"a\", \"b\"]")
        return value
    if want is str and isinstance(value, (int, float, list)) and not isinstance(value, bool):  # layer = -2, layer = [-2, -8]
        value = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    ok = want is None or (isinstance(value, want) and not (want is int and isinstance(value, bool)))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ValueError(f"--config {fpath}: {key} must be {want.__name__ if want else 'a value'}, found {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"--config {fpath}: {key} = {value!r} is not one of {list(action.choices)}")
    return value

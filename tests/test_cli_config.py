"""`--config run.toml` on every command: the file's values are defaults, flags on the command line win,
and a bad file is one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from precompute.cli import build_parser, main
from precompute.cli_args import parse_args


def _toml(tmp_path, text: str):
    fpath = tmp_path / "run.toml"
    fpath.write_text(text)
    return str(fpath)


def test_file_values_are_defaults_and_flags_win(tmp_path):
    cfg = _toml(tmp_path, 'model = "hf:x"\nlayer = [-2, -8]\ntokens = "cls"\nbatch-size = 16\nfast_decode = true\n')
    args = parse_args(build_parser(), ["extract", "--config", cfg, "--tokens", "patches"])
    assert (args.model, args.layer, args.tokens, args.batch_size, args.fast_decode) == ("hf:x", "-2,-8", "patches", 16, True)
    train = _toml(tmp_path, 'store = "data/stores/s"\nk = 48\narch = "batchtopk"\nlr = 1\n')
    args = parse_args(build_parser(), ["train", "--config", train, "--k", "8"])
    assert (args.store, args.k, args.arch, args.lr) == ("data/stores/s", 8, "batchtopk", 1.0)


def test_extract_runs_from_a_config_file(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    cfg = _toml(tmp_path, f'dataset = "{imgs}"\ndata_root = "{tmp_path / "data"}"\nlayer = "blocks.3"\ntokens = "patches"\n'
                          'image_size = 64\ndevice = "cpu"\n')
    assert main(["extract", "--config", cfg, "--tokens", "pooled"]) == 0
    store = capsys.readouterr().out.split("store ")[1].split(" (")[0]
    manifest = json.loads((tmp_path / "data" / "stores" / store.rsplit("/", 1)[-1] / "manifest.json").read_text())
    assert (manifest["layer"], manifest["token_selection"], manifest["image_size"]) == ("blocks.3", "pooled", 64)


@pytest.mark.parametrize(("text", "message"), [
    ('layr = "-2"\n', "unknown option 'layr'; options are"),
    ("batch_size = \"big\"\n", "batch_size must be int, found 'big'"),
    ("fast_decode = 1\n", "fast_decode must be bool"),
    ("layer = \n", "not valid TOML"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, text, message):
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--config", _toml(tmp_path, text), "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "data").exists()


def test_missing_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "nope.toml")])
    assert "No such file" in capsys.readouterr().err

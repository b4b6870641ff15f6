"""Concept projection into CLIP/SigLIP's joint space (precompute.concepts_joint) on tiny models.

Tiny CLIP and SigLIP checkpoints are built from configs and saved as local folders with a real
BPE tokenizer, so the code under test loads them as it loads hub checkpoints. The stored
concepts are checked against a numpy computation from the raw weights (layernorm's linear part,
projection or pooling head's value path, cosine with the models' own text features), and a
direction planted to land on one word's embedding must name that word first.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from precompute import concepts_joint as cj
from sae_core.checkpoint import save
from sae_core.config import SAEConfig
from sae_core.model import SparseAutoencoder
from sae_core.store import StoreWriter

transformers = pytest.importorskip("transformers")

D, D_JOINT, N_LAYERS, POSITIONS = 32, 16, 2, 40
CHARS = "abcdefghijklmnopqrstuvwxyz."
VOCAB = ["goldfish", "tabby cat", "red", "bicycle", "snow", "teapot", "violin", "lemon", "wooden", "zebra", "cloud", "piano"]


def _tokenizer(dpath: Path):
    """A real CLIP BPE tokenizer over single characters (ids fit the tiny text towers)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (dpath / "vocab.json").write_text(json.dumps(vocab))
    (dpath / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(dpath / "vocab.json"), str(dpath / "merges.txt"), unk_token="<|endoftext|>",
                                      pad_token="<|endoftext|>")


def _text_kwargs() -> dict:
    return {"vocab_size": 2 + 2 * len(CHARS), "hidden_size": D, "intermediate_size": 64, "num_hidden_layers": N_LAYERS,
            "num_attention_heads": 4, "max_position_embeddings": POSITIONS}


def _vision_kwargs() -> dict:
    return {"hidden_size": D, "intermediate_size": 64, "num_hidden_layers": N_LAYERS, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8}


def _randomise_norms(model) -> None:
    """Layernorms start at gamma=1, beta=0; random ones make the hand computation test them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    text = {**_text_kwargs(), "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=_vision_kwargs(),
                                                           projection_dim=D_JOINT)).eval()
    _randomise_norms(model)
    model.save_pretrained(d)
    _tokenizer(d).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(1)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=_text_kwargs(), vision_config=_vision_kwargs())).eval()
    _randomise_norms(model)
    model.save_pretrained(d)
    _tokenizer(d).save_pretrained(d)
    return d


def _sae(d_sae: int = 24, seed: int = 3) -> SparseAutoencoder:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(arch="relu", d_in=D, d_sae=d_sae))
    with torch.no_grad():
        sae.input_scale.fill_(2.5)  # the carry must undo it (it cancels in a cosine, but not in the planted test)
    return sae


def _text_features(path: Path, texts: list[str]) -> np.ndarray:
    """The models' own `get_text_features`, unit rows (SigLIP padded to full length, as its docs say)."""
    model = transformers.AutoModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    siglip = model.config.model_type == "siglip"
    enc = tok(texts, padding="max_length" if siglip else True, max_length=POSITIONS, truncation=True, return_tensors="pt")
    if siglip:
        enc.pop("attention_mask")
    with torch.no_grad():
        out = model.get_text_features(**enc)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    out = out.numpy().astype(np.float64)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _hand_carry(path: Path, layer: str) -> np.ndarray:
    """[d_joint, d_in] from the saved weights, written out in numpy."""
    w = {k: v.float().numpy().astype(np.float64) for k, v in transformers.AutoModel.from_pretrained(path).state_dict().items()}
    centre = np.eye(D) - 1.0 / D
    if "visual_projection.weight" in w:  # CLIP
        ln = w["vision_model.post_layernorm.weight"][:, None] * centre
        return w["visual_projection.weight"] if layer == "pooler" else w["visual_projection.weight"] @ ln
    values = w["vision_model.head.attention.out_proj.weight"] @ w["vision_model.head.attention.in_proj_weight"][2 * D :]
    if layer == "pooler":
        return np.eye(D)
    if layer == "last_hidden_state":
        return values
    return values @ (w["vision_model.post_layernorm.weight"][:, None] * centre)


def _hand_top(path: Path, layer: str, sae: SparseAutoencoder, vocab: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    dirs = sae.W_dec.detach().numpy().astype(np.float64) / float(sae.input_scale)
    emb = dirs @ _hand_carry(path, layer).T
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ _text_features(path, [cj.TEMPLATE.format(w) for w in vocab]).T
    order = np.argsort(-cos, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(cos, order, axis=1)


@pytest.mark.parametrize("which,layer", [("clip", "-2"), ("clip", "pooler"), ("siglip", "1"), ("siglip", "last_hidden_state"),
                                         ("siglip", "pooler")])
def test_stored_concepts_equal_a_numpy_computation(clip_dir, siglip_dir, which, layer):
    path = clip_dir if which == "clip" else siglip_dir
    sae = _sae()
    live = np.ones(sae.cfg.d_sae, bool)
    live[5] = False  # a feature that never fired gets no rows
    space = cj.load_joint_space(f"hf:{path}", layer)
    assert space.family == ("CLIP" if which == "clip" else "SigLIP")
    rows = cj.joint_concepts(sae, space, VOCAB, live, n=4)
    order, cos = _hand_top(path, layer, sae, VOCAB, 4)
    assert rows.method == "joint" and set(rows.kind) == {"closest"} and 5 not in rows.feature_id
    assert len(rows.feature_id) == 4 * (sae.cfg.d_sae - 1)
    got = {(f, r): (c, s) for f, r, c, s in zip(rows.feature_id, rows.rank, rows.concept, rows.score)}
    for f in range(sae.cfg.d_sae):
        if f == 5:
            continue
        assert [got[f, r][0] for r in range(4)] == [VOCAB[i] for i in order[f]], f
        assert [got[f, r][1] for r in range(4)] == pytest.approx(cos[f].tolist(), abs=2e-5)


@pytest.mark.parametrize("which,layer", [("clip", "-1"), ("siglip", "-2")])
def test_a_direction_planted_on_a_words_embedding_names_that_word_first(clip_dir, siglip_dir, which, layer):
    """Hidden truth: feature 7's direction is the least-squares preimage (numpy pseudo-inverse of the
    hand carry) of one word's text embedding; that word must come first. CLIP's carry reaches the
    whole joint space (cosine 1); SigLIP's loses one dimension to the layernorm's centring, so the
    cosine is that of the embedding with its part inside the carry's range."""
    path = clip_dir if which == "clip" else siglip_dir
    sae = _sae()
    target = VOCAB.index("teapot")
    text = _text_features(path, [cj.TEMPLATE.format(w) for w in VOCAB])
    carry = _hand_carry(path, layer)
    planted = np.linalg.pinv(carry) @ text[target]
    reached = carry @ planted
    expected = float(reached @ text[target] / np.linalg.norm(reached))
    assert expected > (0.999 if which == "clip" else 0.5)
    with torch.no_grad():
        sae.W_dec[7] = torch.as_tensor(planted * float(sae.input_scale), dtype=torch.float32)
    rows = cj.joint_concepts(sae, cj.load_joint_space(f"hf:{path}", layer), VOCAB, np.ones(sae.cfg.d_sae, bool), n=3)
    first = [(c, s) for f, r, c, s in zip(rows.feature_id, rows.rank, rows.concept, rows.score) if f == 7 and r == 0]
    assert first[0][0] == "teapot" and first[0][1] == pytest.approx(expected, abs=1e-4)
    others = [s for f, r, c, s in zip(rows.feature_id, rows.rank, rows.concept, rows.score) if f == 7 and r == 1]
    assert others[0] < 1.0 - 1e-3


def test_layers_of_one_model_share_one_text_tower(clip_dir):
    """A worker with SAEs on several layers of one CLIP loads its text tower once; each layer's carry
    is still that layer's own (the hand computation)."""
    spaces = cj.load_joint_spaces(f"hf:{clip_dir}", ["-2", "-1", "-2"])
    assert list(spaces) == ["-2", "-1"] and spaces["-2"].model is spaces["-1"].model
    for layer, space in spaces.items():
        np.testing.assert_allclose(space.carry.double().numpy(), _hand_carry(clip_dir, layer), rtol=1e-4, atol=1e-5)


def test_vocabulary_is_imagenet_then_the_shipped_words():
    from precompute.heads import imagenet_class_names

    vocab = cj.vocabulary()
    words = [w for w in cj.WORDS_FPATH.read_text().splitlines() if w and not w.startswith("#")]
    assert "WordNet 3.0" in cj.WORDS_FPATH.read_text().splitlines()[0] and (cj.WORDS_FPATH.parent / "LICENSE-WordNet").is_file()
    assert len(words) >= 4000 and {"dog", "car", "red", "tree"} <= set(words)
    assert vocab[:3] == imagenet_class_names()[:3] and "analog clock" in vocab
    assert len({v.lower() for v in vocab}) == len(vocab) and len(vocab) >= 5000


def test_a_vision_tower_saved_alone_is_skipped_in_one_line(tmp_path, caplog):
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**_vision_kwargs())).save_pretrained(tmp_path)
    manifest = {"model": f"hf:{tmp_path}", "layer": "-2"}
    caplog.clear()
    assert cj.store_joint_concepts(_sae(), manifest, np.ones(24, bool)) is None
    said = [r for r in caplog.records if r.name.startswith("precompute")]  # a logged warning (stderr under the CLI)
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "without a text tower" in said[0].message and "joint-space concepts skipped" in said[0].message
    caplog.clear()
    assert cj.store_joint_concepts(_sae(), {"model": "efficientnet-lite0", "layer": "head"}, np.ones(24, bool)) is None
    assert not [r for r in caplog.records if r.name.startswith("precompute")]  # other families: nothing expected, nothing said


# ----------------------------------------------------------------------------- index and worker


def _store(root: Path, model: str, acts: np.ndarray, ds: Path) -> Path:
    dpath = root / "stores" / "clipstore"
    writer = StoreWriter(dpath, {"dataset_id": ds.name, "dataset_dpath": str(ds), "model": model, "model_revision": None,
                                 "layer": "-2", "token_selection": "cls", "tokens_per_sample": 1, "grid": None, "d_in": D,
                                 "dtype": "float32", "fingerprint": "0"})
    writer.append(torch.from_numpy(acts), np.arange(len(acts)))
    writer.finish()
    return dpath


@pytest.fixture(scope="module")
def clip_index(clip_dir, tmp_path_factory):
    """A tiny CLIP store and SAE, indexed; feature 7 planted on 'teapot' (the word is in the real vocabulary)."""
    from precompute.index import IndexConfig, build_index
    from tests.precompute_helpers import make_dataset

    root = tmp_path_factory.mktemp("clipidx")
    ds = make_dataset(root, 40, with_thumbs=False)
    store = _store(root, f"hf:{clip_dir}", np.random.default_rng(0).normal(size=(40, D)).astype(np.float32), ds)
    sae = _sae(d_sae=16)
    text = _text_features(clip_dir, [cj.TEMPLATE.format("teapot")])[0]
    with torch.no_grad():
        sae.W_dec[7] = torch.as_tensor(np.linalg.pinv(_hand_carry(clip_dir, "-2")) @ text * float(sae.input_scale), dtype=torch.float32)
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(0.5)  # every feature fires on some samples
    ckpt = save(sae, root / "saes" / "clipsae", store={"store_id": store.name, "dpath": str(store), "model": f"hf:{clip_dir}",
                                                      "layer": "-2"}, metrics={"explained_variance": 0.5})
    res = build_index(IndexConfig(saes=(str(ckpt),), store=str(store), out=str(root / "index" / "clip.duckdb"), top_n=8,
                                  per_bin=2, quantile_bins=3, device="cpu"))
    return res.fpath, res.sae_ids[0], sae


def test_index_on_a_clip_store_gains_joint_concepts(clip_index, clip_dir):
    fpath, sae_id, sae = clip_index
    with duckdb.connect(str(fpath), read_only=True) as con:
        rows = con.execute("SELECT feature_id, rank, concept, score FROM feature_concepts WHERE sae_id = ? AND method = 'joint' "
                           "AND kind = 'closest' ORDER BY feature_id, rank", [sae_id]).fetchall()
        live = [f for (f,) in con.execute("SELECT feature_id FROM features WHERE sae_id = ? AND max_act > 0 ORDER BY 1",
                                          [sae_id]).fetchall()]
        page = json.loads(con.execute("SELECT page FROM feature_page WHERE sae_id = ? AND feature_id = 7", [sae_id]).fetchone()[0])
        found = con.execute("SELECT concept_weight FROM search_terms WHERE sae_id = ? AND term = 'teapot' AND feature_id = 7",
                            [sae_id]).fetchone()
    assert 7 in live and sorted({f for f, *_ in rows}) == live and len(rows) == cj.N_JOINT * len(live)
    assert rows[[f for f, *_ in rows].index(7)][2] == "teapot"
    assert page["concepts"][0] == {"kind": "closest", "concept": "teapot", "score": pytest.approx(1.0, abs=1e-4), "method": "joint"}
    assert found is not None and found[0] == pytest.approx(1.0)
    space = cj.load_joint_space(f"hf:{clip_dir}", "-2")
    want = cj.joint_concepts(sae, space, cj.vocabulary(), np.isin(np.arange(16), live))
    assert [(f, r, c) for f, r, c, _ in rows] == list(zip(want.feature_id, want.rank, want.concept))
    assert [s for *_, s in rows] == pytest.approx(want.score, abs=1e-5)


def test_worker_ranks_features_by_meaning_and_search_shows_them(clip_index, clip_dir, tmp_path):
    """Real uvicorn: the worker's /concept_search equals the numpy cosines; the explorer's search
    lists the planted feature first 'by meaning', and without a worker the word results stand alone."""
    import httpx
    from live_servers import explorer, free_port, worker

    fpath, sae_id, sae = clip_index
    dirs = sae.W_dec.detach().numpy().astype(np.float64) @ _hand_carry(clip_dir, "-2").T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hand = dirs @ _text_features(clip_dir, ["a photo of a teapot."])[0]
    with duckdb.connect(str(fpath), read_only=True) as con:
        live = {f for (f,) in con.execute("SELECT feature_id FROM features WHERE sae_id = ? AND max_act > 0", [sae_id]).fetchall()}
    want = sorted((f for f in range(16) if f in live), key=lambda f: -hand[f])[:5]
    with worker(fpath, tmp_path) as (wurl, _):
        r = httpx.post(wurl + "/concept_search", data={"sae_id": sae_id, "text": " teapot ", "k": "5"}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["space"] == "CLIP" and body["prompt"] == "a photo of a teapot." and body["text"] == "teapot"
        assert [h["feature_id"] for h in body["features"]] == want and want[0] == 7
        assert [h["cosine"] for h in body["features"]] == pytest.approx([hand[f] for f in want], abs=1e-4)
        empty = httpx.post(wurl + "/concept_search", data={"sae_id": sae_id, "text": "  "}, timeout=60)
        unknown = httpx.post(wurl + "/concept_search", data={"sae_id": "nope", "text": "cat"}, timeout=60)
        assert empty.status_code == 400 and "empty" in empty.json()["detail"]
        assert unknown.status_code == 404 and "no SAE 'nope'" in unknown.json()["detail"]
        with explorer(fpath, tmp_path, wurl, {"SAESCOPE_LIVE_CONNECT_GRACE_S": "0"}) as (aurl, _):
            s = httpx.get(f"{aurl}/sae/{sae_id}/search.json", params={"q": "teapot"}, timeout=60).json()
            html = httpx.get(f"{aurl}/sae/{sae_id}/search", params={"q": "teapot"}, timeout=60).text
            page = httpx.get(f"{aurl}/sae/{sae_id}/feature/7", timeout=60).text
    assert s["meaning"]["space"] == "CLIP" and [h["feature_id"] for h in s["meaning"]["data"]][:5] == want
    assert s["meaning"]["data"][0]["score"] == pytest.approx(hand[7], abs=1e-4)
    assert 7 in [h["feature_id"] for h in s["data"]]  # the stored concept word matches too
    assert "By meaning in CLIP space" in html and 'data-space="CLIP"' in html
    assert "Closest words in CLIP space" in page and "<td>teapot</td>" in page
    with explorer(fpath, tmp_path, f"http://127.0.0.1:{free_port()}", {"SAESCOPE_LIVE_CONNECT_GRACE_S": "0"}) as (aurl, _):
        off = httpx.get(f"{aurl}/sae/{sae_id}/search.json", params={"q": "teapot"}, timeout=60)
    assert off.status_code == 200 and off.json()["meaning"] is None
    assert [h["feature_id"] for h in off.json()["data"]] == [h["feature_id"] for h in s["data"]]

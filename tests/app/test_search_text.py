"""The query side (Python `words`) and the index side (DuckDB `words_sql`) cut text identically."""

from __future__ import annotations

import random

import duckdb
import pytest

from app.search_text import terms_sql, words, words_sql

CASES = ["Cars, the CAR's wheel; car’s", "puppies boxes glass bus classes cactus analysis is this watches wishes",
         "Straße İstanbul Köln ΣΟΦΟΣ naïve café", "don't stop ''quoted'' it's 's s's x'", "", "²  🙂 ñandú x_y 12 ١٢",
         "tri.ngle red-triangle e\u0301cole", "日本語のテキスト 中文", "ÆØÅ æøå ǅ ǈ", "a\u00a0b\tc\nd", "'leading trailing'",
         "Ⅻ ﬁne ＡＢＣ", "the   spaces  ", "x'y'z ab''cd"]


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


def sql_words(con, text: str) -> list[str]:
    return con.execute(f"SELECT {words_sql('$1')}", [text]).fetchone()[0]


@pytest.mark.parametrize("text", CASES)
def test_python_and_sql_agree_on_known_cases(con, text):
    assert words(text) == sql_words(con, text)


def test_python_and_sql_agree_on_random_mixed_script_text(con):
    alphabet = ("abcdeisxyzABCSXYZ'’ _-.,0123456789" "ßİıΣσςéüñÅæ" "\u0301\u0308" "日本中" "١٢" "🙂" "\u00a0\t")
    rng = random.Random(14)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert words(text) == sql_words(con, text), repr(text)


def test_plurals_possessives_and_case_fold_to_one_term():
    assert words("Cars car's CAR’S car") == ["car"] * 4
    assert words("puppies boxes classes glass bus watches") == ["puppy", "box", "class", "glass", "bus", "watch"]
    assert words("don't") == ["don't"] and words("gas is") == ["gas", "is"]


def test_terms_are_words_and_bigrams(con):
    got = con.execute(f"SELECT {terms_sql('w')} FROM (SELECT {words_sql('$1')} AS w)", ["a red red car"]).fetchone()[0]
    assert sorted(got) == sorted(["a", "red", "car", "a red", "red red", "red car"])

"""The scan's GPU-side helpers (`precompute.scan_device`) give what the CPU scan gives, bit for bit.

They run on CUDA only in the scan; here they run on the CPU against the filtered merges they
replace there, on chunks with tied scores, short rows and empty top-N slots.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from precompute.encoding import SampleCode
from precompute.scan import merge_top, sample_top
from precompute.scan_device import feature_counts, merge_top_fixed, read_ahead, sample_top_fixed


def _chunk(gen: torch.Generator, n_rows: int, d_sae: int, density: float) -> SampleCode:
    """Random positive scores, one entry per (row, feature), few distinct values (so ties abound)."""
    fire = torch.rand(n_rows, d_sae, generator=gen) < density
    rows, feats = fire.nonzero(as_tuple=True)
    values = torch.randint(1, 6, (rows.numel(),), generator=gen).float() / 4
    return SampleCode(rows, feats, values)


def test_fixed_shape_merge_keeps_the_same_top_lists_as_the_filtered_merge():
    gen = torch.Generator().manual_seed(0)
    top_n, d_sae = 5, 23
    state_a = state_b = (torch.full((top_n, d_sae), -torch.inf), torch.full((top_n, d_sae), -1, dtype=torch.long))
    first, partly_empty = 0, []
    for n_rows, density in ((3, 0.3), (40, 0.2), (17, 0.5), (60, 0.05), (8, 0.0)):
        code = _chunk(gen, n_rows, d_sae, density)
        ids = torch.arange(first, first + n_rows) * 3 + 1  # sample ids, increasing with the store order
        state_a = merge_top(*state_a, code, ids)
        state_b = merge_top_fixed(*state_b, code, ids)
        assert torch.equal(state_a[0], state_b[0]) and torch.equal(state_a[1], state_b[1])
        partly_empty.append(bool((state_b[1] == -1).any() and (state_b[1] >= 0).any()))
        first += n_rows
    assert partly_empty[0] and (state_b[1] >= 0).all()  # empty slots early on, all full at the end


def test_fixed_shape_sample_tops_match_sample_top_with_padding_and_ties():
    gen = torch.Generator().manual_seed(1)
    code = _chunk(gen, 30, 19, 0.15)  # some rows have fewer than m firing features, some none
    for m in (1, 4, 19):
        want_v, want_i = sample_top(code, 30, m)
        got_v, got_i = sample_top_fixed(code, 30, m)
        assert torch.equal(want_v, got_v) and torch.equal(want_i, got_i)
        assert got_i.dtype == torch.int32


def test_feature_counts_is_bincount():
    feats = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(feature_counts(feats, 64), torch.bincount(feats, minlength=64))


def test_read_ahead_yields_every_chunk_in_order_reading_the_next_on_a_thread():
    pulled: list[tuple[int, str]] = []

    def chunks():
        for i in range(5):
            pulled.append((i, threading.current_thread().name))
            yield i * 10, torch.full((3, 2), float(i))

    seen = []
    for first, acts in read_ahead(chunks(), pin=False):
        seen.append((first, acts[0, 0].item()))
        if first == 0:  # while chunk 0 is in use, chunk 1 is already being read
            for _ in range(200):
                if len(pulled) >= 2:
                    break
                threading.Event().wait(0.01)
            assert len(pulled) >= 2
    assert seen == [(i * 10, float(i)) for i in range(5)]
    assert all(name.startswith("saescope-scan-read") for _, name in pulled)
    np.testing.assert_array_equal([i for i, _ in pulled], np.arange(5))

"""Length-sorted batching: bounded padding, every text once, results in input order."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import cosines

from edgembed.runtime.batching import plan_batches


@pytest.mark.parametrize("batch_size,budget", [(1, 10_000), (4, 10_000), (32, 64), (3, 7)])
def test_plan_covers_every_text_once_within_limits(batch_size, budget):
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 40, size=57)]
    batches = plan_batches(lengths, batch_size, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(57))
    for batch in batches:
        assert len(batch) <= batch_size
        padded = max(lengths[i] for i in batch) * len(batch)
        assert padded <= budget or len(batch) == 1


def test_plan_groups_similar_lengths():
    lengths = [5, 300, 6, 310, 7, 305]
    assert plan_batches(lengths, 3, 10_000) == [[3, 5, 1], [4, 2, 0]]


def test_plan_of_nothing():
    assert plan_batches([], 32, 100) == []


def test_mixed_lengths_come_back_in_order(embedders, parity_texts):
    model = embedders["fp32", "onnxruntime"]
    texts = parity_texts[:44]
    one_by_one = np.concatenate([model.encode([t]) for t in texts])
    sorted_batches = model.encode(texts, batch_size=8, max_batch_tokens=300)
    assert cosines(one_by_one, sorted_batches).min() >= 0.99999


def test_bad_token_budget(embedders):
    with pytest.raises(ValueError, match="max_batch_tokens=0 is not valid: expected an integer of at least 1"):
        embedders["fp32", "onnxruntime"].encode(["x"], max_batch_tokens=0)

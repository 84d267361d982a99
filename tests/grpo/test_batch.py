"""Packing sampled sequences for the learner: layout, sharding and micro-batches (pure)."""

from __future__ import annotations

import pytest
import torch

from deepext.grpo.batch import SampledSequence, build_batch

SEQUENCES = [
    SampledSequence([1, 2, 3], [10, 11], [-0.1, -0.2], 1.0),
    SampledSequence([4], [12, 13, 14], [-0.3, -0.4, -0.5], -1.0),
    SampledSequence([5, 6], [], [], 0.5),
]


def test_layout_left_pads_prompts_and_right_pads_completions() -> None:
    batch = build_batch(SEQUENCES, pad_id=0)
    assert batch.prompt_len == 3
    assert batch.input_ids.tolist() == [[1, 2, 3, 10, 11, 0], [0, 0, 4, 12, 13, 14], [0, 5, 6, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]]
    assert batch.position_ids[1].tolist() == [0, 0, 0, 1, 2, 3]  # positions count real tokens, as vLLM does
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1], [0, 0, 0]]
    assert batch.completion_ids.tolist() == [[10, 11, 0], [12, 13, 14], [0, 0, 0]]
    assert torch.allclose(batch.rollout_logprobs[1], torch.tensor([-0.3, -0.4, -0.5]))
    assert batch.num_tokens == 5


def test_shards_cover_all_rows_once_and_trim_padding() -> None:
    batch = build_batch(SEQUENCES, pad_id=0)
    first, second = batch.shard(0, 2), batch.shard(1, 2)
    assert (first.size, second.size) == (2, 1)
    assert second.input_ids.tolist() == [[5, 6]]  # prompt padding and empty completion trimmed
    assert second.completion_mask.shape == (1, 0)
    assert [m.size for m in batch.micro_batches(2)] == [2, 1]
    assert sum(m.num_tokens for m in batch.micro_batches(1)) == batch.num_tokens


def test_sorting_by_length_keeps_every_row_and_reduces_padding() -> None:
    batch = build_batch([SEQUENCES[1], SEQUENCES[2], SEQUENCES[0], SEQUENCES[2]], pad_id=0)
    ordered = batch.sorted_by_length()
    assert ordered.attention_mask.sum(dim=1).tolist() == [2, 2, 4, 5]
    assert sorted(ordered.advantages.tolist()) == sorted(batch.advantages.tolist())
    padded = sum(m.input_ids.numel() for m in batch.micro_batches(2))
    assert sum(m.input_ids.numel() for m in ordered.micro_batches(2)) < padded


def test_rows_of_one_prompt_are_found_as_one_prompt() -> None:
    a, b = [7, 8, 9], [4]  # b is left-padded: the padding is part of what must match
    rows = [SampledSequence(p, [10 + i], [-0.1], 1.0) for i, p in enumerate([b, a, b, a, [7, 8]])]
    first_rows, prompt_of_row = build_batch(rows, pad_id=0).distinct_prompts()
    assert first_rows.tolist() == [0, 1, 4]  # in order of first appearance
    assert prompt_of_row.tolist() == [0, 1, 0, 1, 2]


def test_grouping_by_prompt_keeps_each_prompts_rows_together() -> None:
    long, short = [1, 2], [3]
    rows = [
        SampledSequence(long, [10, 11, 12], [-0.1] * 3, 1.0),
        SampledSequence(short, [13], [-0.1], 2.0),
        SampledSequence(long, [14], [-0.1], 3.0),
        SampledSequence(short, [15, 16], [-0.1] * 2, 4.0),
    ]
    grouped = build_batch(rows, pad_id=0).grouped_by_prompt()
    # the short prompt's group is shorter at its longest, so it comes first; short rows first within a group
    assert grouped.advantages.tolist() == [2.0, 4.0, 3.0, 1.0]
    assert [m.distinct_prompts()[0].numel() for m in grouped.micro_batches(2)] == [1, 1]


def test_mismatched_logprobs_are_refused() -> None:
    with pytest.raises(ValueError, match="sequence 0: 2 tokens but 1 logprobs"):
        build_batch([SampledSequence([1], [2, 3], [-0.1], 0.0)], pad_id=0)

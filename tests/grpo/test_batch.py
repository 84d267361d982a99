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


def test_mismatched_logprobs_are_refused() -> None:
    with pytest.raises(ValueError, match="sequence 0: 2 tokens but 1 logprobs"):
        build_batch([SampledSequence([1], [2, 3], [-0.1], 0.0)], pad_id=0)

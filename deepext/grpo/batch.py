"""Packing sampled sequences into padded tensors for the learner (pure, no model).

Layout of one batch of B sequences, prompts left-padded to P tokens and completions right-padded
to T tokens:

    input_ids        (B, P + T)   [pad pad p1 p2 p3 | c1 c2 c3 pad]
    attention_mask   (B, P + T)   [ 0   0  1  1  1  |  1  1  1  0 ]
    position_ids     (B, P + T)   positions count real tokens only, as in vLLM
    completion_mask  (B, T)       1.0 on completion tokens
    rollout_logprobs (B, T)       the sampler's log-probabilities of the completion tokens
    advantages       (B,)

so the logits at positions P-1 .. P+T-2 predict the completion tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampledSequence:
    prompt_ids: list[int]
    completion_ids: list[int]
    rollout_logprobs: list[float]
    advantage: float


@dataclass(frozen=True)
class LearnerBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    advantages: torch.Tensor
    prompt_len: int

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum().item())

    def select(self, start: int, end: int) -> LearnerBatch:
        """Rows start..end, with padding trimmed to what those rows need."""
        rows = slice(start, end)
        attention = self.attention_mask[rows]
        prompt_real = attention[:, : self.prompt_len].sum(dim=1)
        completion_real = self.completion_mask[rows].sum(dim=1)
        drop_left = self.prompt_len - int(prompt_real.max().item()) if len(prompt_real) else 0
        keep_right = int(completion_real.max().item()) if len(completion_real) else 0
        total = self.prompt_len + keep_right
        return LearnerBatch(
            input_ids=self.input_ids[rows, drop_left:total],
            attention_mask=attention[:, drop_left:total],
            position_ids=self.position_ids[rows, drop_left:total],
            completion_mask=self.completion_mask[rows, :keep_right],
            rollout_logprobs=self.rollout_logprobs[rows, :keep_right],
            advantages=self.advantages[rows],
            prompt_len=self.prompt_len - drop_left,
        )

    def rows(self, index: torch.Tensor) -> LearnerBatch:
        """The rows `index` names, in that order (padding as it is)."""
        return LearnerBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            position_ids=self.position_ids[index],
            completion_mask=self.completion_mask[index],
            rollout_logprobs=self.rollout_logprobs[index],
            advantages=self.advantages[index],
            prompt_len=self.prompt_len,
        )

    def sorted_by_length(self) -> LearnerBatch:
        """The same rows, shortest first, so micro-batches group similar lengths and pad little."""
        return self.rows(torch.argsort(self.attention_mask.sum(dim=1), stable=True))

    def grouped_by_prompt(self) -> LearnerBatch:
        """The same rows with each prompt's rows together (longest group last, shortest row first in a
        group), so a micro-batch holds few distinct prompts for the learner to run once each."""
        if self.size == 0:
            return self
        _, prompt_of_row = self.distinct_prompts()
        lengths = self.attention_mask.sum(dim=1)
        group_length = torch.zeros(int(prompt_of_row.max().item()) + 1, dtype=lengths.dtype)
        group_length = group_length.scatter_reduce(0, prompt_of_row, lengths, "amax")
        order = torch.argsort(lengths, stable=True)
        order = order[torch.argsort(prompt_of_row[order], stable=True)]
        order = order[torch.argsort(group_length[prompt_of_row[order]], stable=True)]
        return self.rows(order)

    def distinct_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the first row holding each distinct prompt, each row's index into those rows).

        Rows of one GRPO group carry the same prompt with the same left padding, so they compare equal."""
        prompts = torch.cat([self.input_ids[:, : self.prompt_len], self.attention_mask[:, : self.prompt_len]], dim=1)
        _, prompt_of_row = torch.unique(prompts, dim=0, return_inverse=True)
        # torch.unique sorts the prompts; renumber them by first appearance so the first row stays first.
        first_rows = torch.full((int(prompt_of_row.max().item()) + 1,), self.size, dtype=torch.long)
        first_rows = first_rows.scatter_reduce(0, prompt_of_row, torch.arange(self.size), "amin")
        order = torch.argsort(first_rows)
        renumber = torch.empty_like(order)
        renumber[order] = torch.arange(len(order))
        return first_rows[order], renumber[prompt_of_row]

    def with_nonzero_advantage(self) -> LearnerBatch:
        """The rows that can move the policy. Without a KL term, a row whose advantage is 0 (every
        row of a group whose rewards are all equal) has exactly zero loss and gradient."""
        return self.rows(torch.nonzero(self.advantages != 0).flatten())

    def shard(self, rank: int, world_size: int) -> LearnerBatch:
        """This learner's contiguous share of the rows."""
        size, extra = divmod(self.size, world_size)
        start = rank * size + min(rank, extra)
        return self.select(start, start + size + (1 if rank < extra else 0))

    def micro_batches(self, size: int) -> Iterator[LearnerBatch]:
        for start in range(0, self.size, size):
            yield self.select(start, min(start + size, self.size))


def build_batch(sequences: Sequence[SampledSequence], pad_id: int) -> LearnerBatch:
    """Pad `sequences` into one `LearnerBatch` (layout in the module docstring)."""
    if not sequences:
        raise ValueError("cannot build a batch from no sequences")
    prompt_len = max(len(s.prompt_ids) for s in sequences)
    completion_len = max(max(len(s.completion_ids) for s in sequences), 1)
    rows = len(sequences)
    input_ids = torch.full((rows, prompt_len + completion_len), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, prompt_len + completion_len), dtype=torch.long)
    completion_mask = torch.zeros((rows, completion_len), dtype=torch.float32)
    rollout_logprobs = torch.zeros((rows, completion_len), dtype=torch.float32)
    for row, seq in enumerate(sequences):
        if len(seq.rollout_logprobs) != len(seq.completion_ids):
            raise ValueError(
                f"sequence {row}: {len(seq.completion_ids)} tokens but {len(seq.rollout_logprobs)} logprobs"
            )
        p, c = len(seq.prompt_ids), len(seq.completion_ids)
        input_ids[row, prompt_len - p : prompt_len] = torch.tensor(seq.prompt_ids, dtype=torch.long)
        attention[row, prompt_len - p : prompt_len + c] = 1
        if c:
            input_ids[row, prompt_len : prompt_len + c] = torch.tensor(seq.completion_ids, dtype=torch.long)
            completion_mask[row, :c] = 1.0
            rollout_logprobs[row, :c] = torch.tensor(seq.rollout_logprobs, dtype=torch.float32)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    advantages = torch.tensor([s.advantage for s in sequences], dtype=torch.float32)
    return LearnerBatch(input_ids, attention, position_ids, completion_mask, rollout_logprobs, advantages, prompt_len)

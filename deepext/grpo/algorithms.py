"""GRPO math: group-relative advantages, per-token log-probabilities, KL, the clipped policy loss and
its aggregation - small pure functions over torch tensors, nothing else.

Variants are picked by name from config, verl style: advantage estimators live in a registry
(`register_advantage_estimator` / `get_advantage_estimator`), loss aggregations in `LOSS_AGGREGATIONS`.
An unknown name raises `ValueError` listing the valid ones.

Papers behind each piece:
- GRPO, group-normalised advantages, k3 KL penalty: Shao et al. 2024, DeepSeekMath, arXiv 2402.03300.
- Dr.GRPO, no std division and a constant loss normaliser: Liu et al. 2025, arXiv 2503.20783.
- DAPO, token-mean aggregation and asymmetric clip ("clip-higher"): Yu et al. 2025, arXiv 2503.14476.
- Truncated importance sampling between sampler and learner: Yao et al. 2025, "Your efficient RL
  framework secretly brings you off-policy RL training".

Shapes: B = sequences in the batch (num_groups * group_size), T = completion length (padded),
V = vocabulary size. `mask` is 1.0 on completion tokens and 0.0 on padding.

This module imports torch at the top: it is only imported by code that trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageEstimator",
    "PolicyLossConfig",
    "aggregate_loss",
    "compute_advantages",
    "entropy_from_logits",
    "get_advantage_estimator",
    "k3_kl",
    "policy_loss",
    "register_advantage_estimator",
    "token_logprobs",
]

# exp() of a log-ratio beyond this overflows float16 and is meaningless anyway (verl clamps the same way).
_LOG_RATIO_LIMIT = 20.0


def _require_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over real tokens, detached; 0 when the mask is empty. Shapes (B, T) -> ()."""
    values = values.detach()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------------

AdvantageEstimator = Callable[[torch.Tensor, float], torch.Tensor]
"""`(rewards (G, K), eps) -> advantages (G, K)`; G groups of K completions of the same prompt."""

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}

_Estimator = TypeVar("_Estimator", bound=AdvantageEstimator)


def register_advantage_estimator(name: str) -> Callable[[_Estimator], _Estimator]:
    """Decorator registering an advantage estimator under `name`.

    Registering the same function twice is a no-op; registering a name to a different function raises
    `ValueError` (two variants silently shadowing each other is a bug).
    """

    def decorator(fn: _Estimator) -> _Estimator:
        existing = ADVANTAGE_ESTIMATORS.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(
                f"advantage estimator {name!r} is already registered to {existing.__qualname__}, "
                f"cannot register {fn.__qualname__}"
            )
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return decorator


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as `name`; `ValueError` listing the valid names otherwise."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        valid = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"unknown advantage estimator {name!r}; valid names: {valid}") from None


def _zero_variance_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(G, K) -> (G,) bool: groups whose rewards are all exactly equal (includes groups of size 1)."""
    return (rewards == rewards[:, :1]).all(dim=1)


@register_advantage_estimator("grpo")
def grpo_advantages(rewards: torch.Tensor, eps: float) -> torch.Tensor:
    """GRPO outcome advantages (DeepSeekMath, arXiv 2402.03300, section 4.1.2).

    A_ik = (r_ik - mean_k r_i) / (std_k r_i + eps), std unbiased (`torch.std` default, as TRL does).
    A group whose rewards are all equal (or that has one completion) carries no signal and gets exactly 0.
    Shapes: rewards (G, K) -> advantages (G, K).
    """
    if rewards.shape[1] < 2:  # unbiased std of one sample is NaN; the group is zero-variance anyway
        return torch.zeros_like(rewards)
    zero_variance = _zero_variance_groups(rewards)  # (G,)
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (G, K)
    std = rewards.std(dim=1, keepdim=True)  # (G, 1)
    advantages = centered / (std + eps)  # (G, K)
    # The mean of equal floats need not equal them bit for bit, so zero these groups explicitly.
    return torch.where(zero_variance.unsqueeze(1), torch.zeros_like(advantages), advantages)


@register_advantage_estimator("drgrpo")
def drgrpo_advantages(rewards: torch.Tensor, eps: float) -> torch.Tensor:
    """Dr.GRPO advantages (Liu et al. 2025, arXiv 2503.20783): A_ik = r_ik - mean_k r_i, no std division.

    Dividing by the group std up-weights near-uniform groups (too easy / too hard questions); Dr.GRPO drops
    it. `eps` is unused and kept for the common signature. Shapes: rewards (G, K) -> advantages (G, K).
    """
    del eps
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (G, K)
    zero_variance = _zero_variance_groups(rewards)  # (G,)
    return torch.where(zero_variance.unsqueeze(1), torch.zeros_like(centered), centered)


def compute_advantages(name: str, rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages with the estimator registered as `name` ("grpo", "drgrpo").

    rewards: (num_groups, group_size), one row per prompt, one column per sampled completion.
    Returns advantages of the same shape and metrics:
      zero_variance_group_fraction - share of groups whose rewards are all equal (no learning signal);
      reward_std_mean - mean over groups of the unbiased reward std (0 for groups of size 1).

    Worked example, rewards [[1, 0, 0, 1], [2, 2, 2, 2]]:
      group means 0.5 and 2, unbiased stds sqrt(1/3) = 0.5774 and 0;
      grpo   -> [[0.866, -0.866, -0.866, 0.866], [0, 0, 0, 0]]   (0.5 / 0.5774 = 0.866)
      drgrpo -> [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]]
      metrics: zero_variance_group_fraction 0.5, reward_std_mean 0.2887.
    """
    estimator = get_advantage_estimator(name)
    if rewards.dim() != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must have shape (num_groups, group_size), both > 0; got {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN or infinite values")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    advantages = estimator(rewards, eps)
    _require_shape(f"advantages from estimator {name!r}", advantages, rewards.shape)
    zero_variance = _zero_variance_groups(rewards)
    std = rewards.std(dim=1) if rewards.shape[1] > 1 else torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    metrics = {
        "zero_variance_group_fraction": float(zero_variance.float().mean()),
        "reward_std_mean": float(std.mean()),
    }
    return advantages, metrics


# ---------------------------------------------------------------------------------------------------
# Loss aggregation
# ---------------------------------------------------------------------------------------------------


class LossAggregation(Protocol):
    def __call__(
        self,
        per_token: torch.Tensor,
        mask: torch.Tensor,
        *,
        num_tokens: float | None,
        num_seqs: float | None,
        max_tokens: int | None,
    ) -> torch.Tensor: ...


def _token_mean(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | None,
    num_seqs: float | None,
    max_tokens: int | None,
) -> torch.Tensor:
    """DAPO token-level mean (arXiv 2503.14476): sum of token losses / number of real tokens."""
    # A batch of empty completions has no real tokens: its loss is 0, not 0 / 0.
    denominator = mask.sum().clamp(min=1.0) if num_tokens is None else max(num_tokens, 1)
    return (per_token * mask).sum() / denominator


def _seq_mean(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | None,
    num_seqs: float | None,
    max_tokens: int | None,
) -> torch.Tensor:
    """Original GRPO: each sequence's token mean, then the mean over sequences (a sequence without real
    tokens contributes 0 but still counts in num_seqs)."""
    per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B,)
    denominator = per_token.shape[0] if num_seqs is None else num_seqs
    return per_seq.sum() / denominator


def _seq_sum_norm(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | None,
    num_seqs: float | None,
    max_tokens: int | None,
) -> torch.Tensor:
    """Dr.GRPO (arXiv 2503.20783): sum of token losses / (num_seqs * max_tokens), a constant normaliser
    with no length bias. Pass the generation limit as max_tokens; the default is this batch's seq_len."""
    seqs = per_token.shape[0] if num_seqs is None else num_seqs
    length = per_token.shape[1] if max_tokens is None else max_tokens
    return (per_token * mask).sum() / (seqs * length)


LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "token-mean": _token_mean,
    "seq-mean": _seq_mean,
    "seq-sum-norm": _seq_sum_norm,
}


def _check_loss_agg(mode: str) -> None:
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid names: {', '.join(LOSS_AGGREGATIONS)}")


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce per-token losses (B, T) to a scalar, counting only tokens where `mask` (B, T) is 1.

    Modes ("token-mean" DAPO, "seq-mean" GRPO, "seq-sum-norm" Dr.GRPO):
      token-mean:   sum(loss * mask) / num_tokens
      seq-mean:     sum_i [sum_t(loss_it * mask_it) / sum_t mask_it] / num_seqs
      seq-sum-norm: sum(loss * mask) / (num_seqs * max_tokens)

    Normalisers default to this batch's own counts: num_tokens = mask.sum(), num_seqs = B,
    max_tokens = T. Contract for split batches: when one optimiser step's batch is split across learners
    and/or gradient-accumulation micro-batches, pass every part the GLOBAL normalisers of the whole step
    (total real tokens, total sequences, the generation limit) and SUM the parts' gradients; the sum then
    equals the full batch's loss and gradient exactly, in every mode (every mode is linear in the
    sequences once its normalisers are fixed). With the local defaults, the parts of a split batch are
    weighted differently from the full batch (e.g. token-mean would weight a part's tokens by that part's
    count). A data-parallel wrapper that averages gradients over W ranks (DDP does) divides this sum by W,
    so multiply the loss by W there. num_seqs and max_tokens must be > 0; num_tokens >= 0 (0, a batch of
    empty completions, is treated as 1 so the loss is 0 rather than NaN).
    """
    _check_loss_agg(mode)
    if per_token.dim() != 2:
        raise ValueError(f"per_token must have shape (batch, seq_len), got {tuple(per_token.shape)}")
    _require_shape("mask", mask, per_token.shape)
    if num_tokens is not None and not num_tokens >= 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    for label, value in (("num_seqs", num_seqs), ("max_tokens", max_tokens)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} must be > 0, got {value}")
    mask = mask.to(per_token.dtype)
    return LOSS_AGGREGATIONS[mode](per_token, mask, num_tokens=num_tokens, num_seqs=num_seqs, max_tokens=max_tokens)


# ---------------------------------------------------------------------------------------------------
# Log-probabilities, entropy, KL
# ---------------------------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`.

    logits (B, T, V) are the positions that predict tokens (B, T) (i.e. already shifted by one);
    returns (B, T). Use the sampler's temperature so learner and sampler score the same distribution.

    Memory: float32/float64 logits use gather - logsumexp, so no (B, T, V) log-softmax is kept (the
    temperature division makes one copy when temperature != 1). bf16/fp16 logits are scored one
    sequence at a time in float32 (logsumexp in half precision is too coarse) and the result is float32.
    """
    _check_temperature(temperature)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (batch, seq_len, vocab), got {tuple(logits.shape)}")
    _require_shape("tokens", tokens, logits.shape[:2])
    if tokens.is_floating_point():
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    tokens = tokens.long()
    if temperature != 1.0:
        logits = logits / temperature
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return picked - torch.logsumexp(logits, dim=-1)  # (B, T)
    rows = []
    for row_logits, row_tokens in zip(logits, tokens, strict=True):  # (T, V), (T,)
        row = row_logits.float()  # (T, V), one sequence's float32 copy at a time
        picked = torch.gather(row, dim=-1, index=row_tokens.unsqueeze(-1)).squeeze(-1)  # (T,)
        rows.append(picked - torch.logsumexp(row, dim=-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at each position: (B, T, V) -> (B, T).

    H = logsumexp(z) - sum_v softmax(z)_v * z_v, computed one sequence at a time (in float32 for
    half-precision logits) so the softmax temporary is (T, V), not (B, T, V).
    """
    _check_temperature(temperature)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (batch, seq_len, vocab), got {tuple(logits.shape)}")
    rows = []
    for row_logits in logits:  # (T, V)
        row = row_logits if row_logits.dtype in (torch.float32, torch.float64) else row_logits.float()
        if temperature != 1.0:
            row = row / temperature
        probs = torch.softmax(row, dim=-1)  # (T, V)
        rows.append(torch.logsumexp(row, dim=-1) - (probs * row).sum(dim=-1))  # (T,)
    if not rows:
        dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.zeros(logits.shape[:2], dtype=dtype, device=logits.device)
    return torch.stack(rows)  # (B, T)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref) (Schulman 2020; used by GRPO, arXiv 2402.03300 eq. 4).

    With d = ref_logprobs - logprobs: exp(d) - d - 1, which is >= 0 and unbiased for tokens sampled from
    pi. Shapes (B, T), (B, T) -> (B, T). d is clamped to [-20, 20] so exp() stays finite.
    """
    _require_shape("ref_logprobs", ref_logprobs, logprobs.shape)
    delta = (ref_logprobs - logprobs).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)  # (B, T)
    return torch.exp(delta) - delta - 1.0  # (B, T)


# ---------------------------------------------------------------------------------------------------
# Policy loss
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyLossConfig:
    """The policy-loss knobs, validated when built.

    clip_low / clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high]; equal values are PPO /
      GRPO, DAPO's clip-higher uses clip_high = 0.28 (arXiv 2503.14476).
    kl_coef: weight of the k3 KL penalty to the reference policy (0 disables it; DAPO and Dr.GRPO use 0).
    loss_agg: a name in LOSS_AGGREGATIONS.
    tis_cap: truncation cap of the sampler-vs-learner importance weight (Yao et al. 2025); None disables.
    """

    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    loss_agg: str = "token-mean"
    tis_cap: float | None = 2.0

    def __post_init__(self) -> None:
        if self.clip_low < 0 or self.clip_high < 0:
            raise ValueError(f"clip_low and clip_high must be >= 0, got {self.clip_low} and {self.clip_high}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ValueError(f"tis_cap must be > 0 or None, got {self.tis_cap}")
        _check_loss_agg(self.loss_agg)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: PolicyLossConfig,
    *,
    ref_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO surrogate (arXiv 2402.03300 eq. 3) with DAPO clip-higher, optional truncated importance
    sampling and optional k3 KL penalty, aggregated by `cfg.loss_agg`.

    logprobs (B, T): the learner's current log-probs, with grad.
    old_logprobs (B, T): the policy that produced the batch, as the learner computes it (detached).
    advantages (B,): one per sequence, broadcast over its tokens.
    mask (B, T): 1.0 on completion tokens, 0.0 on padding.
    ref_logprobs (B, T): reference policy, needed when cfg.kl_coef > 0.
    rollout_logprobs (B, T): the sampler's log-probs (e.g. vLLM's). With cfg.tis_cap set, each token's
      policy-gradient term is multiplied by w = min(exp(old - rollout), tis_cap), detached, correcting for
      the sampler and learner disagreeing numerically (Yao et al. 2025).
    num_tokens / num_seqs / max_tokens: passed to `aggregate_loss`; give global values when the batch is
      split across learners or micro-batches (see its contract).

    Per token: ratio = exp(logprobs - old_logprobs)
               pg = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A) * w
               loss = pg + kl_coef * k3_kl(logprobs, ref_logprobs)
    Returns the scalar loss and detached scalar metrics, masked means over real tokens of this batch:
      clip_fraction (clipping changed the objective), ratio_mean, kl (0 without ref_logprobs),
      tis_weight_mean (1 without TIS), tis_clipped_fraction (weights that hit the cap).
    """
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must have shape (batch, seq_len), got {tuple(logprobs.shape)}")
    shape = logprobs.shape
    _require_shape("old_logprobs", old_logprobs, shape)
    _require_shape("mask", mask, shape)
    _require_shape("advantages", advantages, shape[:1])
    if ref_logprobs is not None:
        _require_shape("ref_logprobs", ref_logprobs, shape)
    if rollout_logprobs is not None:
        _require_shape("rollout_logprobs", rollout_logprobs, shape)
    if cfg.kl_coef > 0 and ref_logprobs is None:
        raise ValueError(f"kl_coef is {cfg.kl_coef} but no ref_logprobs were given")

    mask = mask.to(logprobs.dtype)  # (B, T)
    old_logprobs = old_logprobs.detach()
    adv = advantages.detach().to(logprobs.dtype).unsqueeze(1)  # (B, 1)

    log_ratio = (logprobs - old_logprobs).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)  # (B, T)
    # -min(x, y) == max(-x, -y): the pessimistic bound; clipping only matters where it raised the loss.
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    clip_used = (clipped > unclipped).to(logprobs.dtype)  # (B, T)

    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if rollout_logprobs is not None and cfg.tis_cap is not None:
        raw_weight = torch.exp(old_logprobs - rollout_logprobs.detach())  # (B, T), may be inf: clamped next
        tis_weight = raw_weight.clamp(max=cfg.tis_cap).to(logprobs.dtype)  # (B, T)
        per_token = per_token * tis_weight
        tis_weight_mean = _masked_mean(tis_weight, mask)
        tis_clipped_fraction = _masked_mean((raw_weight > cfg.tis_cap).to(logprobs.dtype), mask)
    else:
        tis_weight_mean, tis_clipped_fraction = zero + 1.0, zero

    if ref_logprobs is not None:
        kl = k3_kl(logprobs, ref_logprobs.detach())  # (B, T)
        if cfg.kl_coef > 0:
            per_token = per_token + cfg.kl_coef * kl
        kl_metric = _masked_mean(kl, mask)
    else:
        kl_metric = zero

    loss = aggregate_loss(
        per_token, mask, cfg.loss_agg, num_tokens=num_tokens, num_seqs=num_seqs, max_tokens=max_tokens
    )
    metrics = {
        "clip_fraction": _masked_mean(clip_used, mask),
        "ratio_mean": _masked_mean(ratio, mask),
        "kl": kl_metric,
        "tis_weight_mean": tis_weight_mean,
        "tis_clipped_fraction": tis_clipped_fraction,
    }
    return loss, metrics

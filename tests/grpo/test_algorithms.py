"""GRPO math against values worked out by hand: advantages, aggregation (and its split-batch contract),
log-probs, entropy, k3 KL, the clipped policy loss with TIS and KL, its gradient, the registry."""

from __future__ import annotations

import math

import pytest
import torch

from deepext.grpo import algorithms
from deepext.grpo.algorithms import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGGREGATIONS,
    PolicyLossConfig,
    aggregate_loss,
    compute_advantages,
    entropy_from_logits,
    get_advantage_estimator,
    k3_kl,
    policy_loss,
    register_advantage_estimator,
    token_logprobs,
)

F64 = torch.float64
MODES = ["token-mean", "seq-mean", "seq-sum-norm"]


def t(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# --- advantages -------------------------------------------------------------------------------------


def test_grpo_advantages_by_hand() -> None:
    # Group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735; 0.5 / 0.57735 = 0.866025.
    # Group 1: all equal -> exactly 0.
    advantages, metrics = compute_advantages("grpo", t([[1, 0, 0, 1], [2, 2, 2, 2]]), eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    assert a == pytest.approx(0.8660254)
    torch.testing.assert_close(advantages, t([[a, -a, -a, a], [0, 0, 0, 0]]))
    assert metrics["zero_variance_group_fraction"] == 0.5
    assert metrics["reward_std_mean"] == pytest.approx(math.sqrt(1 / 3) / 2)  # (0.57735 + 0) / 2


def test_grpo_eps_is_added_to_std() -> None:
    advantages, _ = compute_advantages("grpo", t([[1, 0]]), eps=0.1)
    std = math.sqrt(0.5)  # unbiased std of [1, 0]
    torch.testing.assert_close(advantages, t([[0.5 / (std + 0.1), -0.5 / (std + 0.1)]]))


def test_drgrpo_advantages_by_hand() -> None:
    advantages, metrics = compute_advantages("drgrpo", t([[1, 0, 0, 1], [2, 2, 2, 2]]))
    torch.testing.assert_close(advantages, t([[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]]))
    assert metrics["zero_variance_group_fraction"] == 0.5


@pytest.mark.parametrize("name", ["grpo", "drgrpo"])
def test_equal_rewards_give_exactly_zero(name: str) -> None:
    # 0.1 * 3 / 3 != 0.1 in floating point; the advantage must still be exactly 0, not 1e-17 / eps.
    rewards = torch.full((2, 3), 0.1, dtype=F64)
    advantages, metrics = compute_advantages(name, rewards)
    assert torch.equal(advantages, torch.zeros_like(rewards))
    assert metrics == {"zero_variance_group_fraction": 1.0, "reward_std_mean": 0.0}


@pytest.mark.parametrize("name", ["grpo", "drgrpo"])
def test_group_of_size_one(name: str) -> None:
    advantages, metrics = compute_advantages(name, t([[3.0], [-1.0]]))
    assert torch.equal(advantages, torch.zeros(2, 1, dtype=F64))
    assert metrics == {"zero_variance_group_fraction": 1.0, "reward_std_mean": 0.0}


def test_compute_advantages_rejects_bad_rewards() -> None:
    with pytest.raises(ValueError, match=r"\(4,\)"):
        compute_advantages("grpo", t([1, 0, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        compute_advantages("grpo", t([[1, float("nan")]]))


def test_integer_rewards_are_accepted() -> None:
    advantages, _ = compute_advantages("drgrpo", torch.tensor([[1, 0]]))
    assert advantages.is_floating_point()
    torch.testing.assert_close(advantages, torch.tensor([[0.5, -0.5]]))


# --- registry ---------------------------------------------------------------------------------------


def test_registry_names_and_unknown_name() -> None:
    assert {"grpo", "drgrpo"} <= set(ADVANTAGE_ESTIMATORS)
    assert get_advantage_estimator("grpo") is algorithms.grpo_advantages
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*drgrpo, grpo"):
        get_advantage_estimator("ppo")
    with pytest.raises(ValueError, match="valid names"):
        compute_advantages("ppo", t([[1, 0]]))


def test_reregistering_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(algorithms, "ADVANTAGE_ESTIMATORS", dict(ADVANTAGE_ESTIMATORS))

    def other(rewards: torch.Tensor, eps: float) -> torch.Tensor:
        return rewards

    with pytest.raises(ValueError, match="'grpo' is already registered"):
        register_advantage_estimator("grpo")(other)
    # The same function again is a no-op; a new name works and is then usable by compute_advantages.
    register_advantage_estimator("grpo")(algorithms.grpo_advantages)
    register_advantage_estimator("identity")(other)
    advantages, _ = algorithms.compute_advantages("identity", t([[1, 2]]))
    torch.testing.assert_close(advantages, t([[1, 2]]))
    assert "identity" not in ADVANTAGE_ESTIMATORS  # the module's real registry was not touched


# --- aggregation ------------------------------------------------------------------------------------

PER_TOKEN = t([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
MASK = t([[1, 1, 1], [1, 1, 0]])


def test_aggregation_by_hand() -> None:
    # Real tokens: 1, 2, 3 | 4, 5 (99 is padding). Sum 15, 5 tokens, 2 sequences, seq_len 3.
    assert aggregate_loss(PER_TOKEN, MASK, "token-mean").item() == pytest.approx(15 / 5)
    assert aggregate_loss(PER_TOKEN, MASK, "seq-mean").item() == pytest.approx((6 / 3 + 9 / 2) / 2)
    assert aggregate_loss(PER_TOKEN, MASK, "seq-sum-norm").item() == pytest.approx(15 / (2 * 3))
    assert aggregate_loss(PER_TOKEN, MASK, "seq-sum-norm", max_tokens=10).item() == pytest.approx(15 / 20)
    assert aggregate_loss(PER_TOKEN, MASK, "token-mean", num_tokens=30).item() == pytest.approx(0.5)


def test_aggregation_names() -> None:
    assert list(LOSS_AGGREGATIONS) == MODES


def test_aggregation_validation() -> None:
    with pytest.raises(ValueError, match=r"unknown loss aggregation 'mean'.*token-mean, seq-mean, seq-sum-norm"):
        aggregate_loss(PER_TOKEN, MASK, "mean")
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\), expected \(2, 3\)"):
        aggregate_loss(PER_TOKEN, MASK[:, :2], "token-mean")
    with pytest.raises(ValueError, match="num_tokens must be >= 0"):
        aggregate_loss(PER_TOKEN, MASK, "token-mean", num_tokens=-1)
    with pytest.raises(ValueError, match="num_seqs must be > 0"):
        aggregate_loss(PER_TOKEN, MASK, "seq-mean", num_seqs=0)


def test_empty_mask_gives_zero_not_nan() -> None:
    for mode in MODES:
        assert aggregate_loss(PER_TOKEN, torch.zeros_like(MASK), mode).item() == 0.0
    # A whole step of empty completions: the learner passes the global count 0.
    assert aggregate_loss(PER_TOKEN, torch.zeros_like(MASK), "token-mean", num_tokens=0).item() == 0.0


def _random_batch(batch: int = 6, seq_len: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    per_token = torch.randn(batch, seq_len, generator=generator, dtype=F64)
    lengths = torch.tensor([7, 1, 4, 0, 5, 2])  # includes an empty completion
    mask = (torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)).to(F64)
    return per_token, mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sizes", [[3, 3], [1, 2, 3], [4, 1, 1]])
def test_split_batches_with_global_normalizers_sum_to_full_batch(mode: str, sizes: list[int]) -> None:
    per_token, mask = _random_batch()
    full = aggregate_loss(per_token, mask, mode)
    num_tokens, num_seqs, max_tokens = float(mask.sum()), float(mask.shape[0]), mask.shape[1]
    parts = []
    for part_loss, part_mask in zip(per_token.split(sizes), mask.split(sizes), strict=True):
        # Each part is also trimmed to its own longest completion, as a learner's padding would be.
        width = max(int(part_mask.sum(dim=1).max()), 1)
        parts.append(
            aggregate_loss(
                part_loss[:, :width],
                part_mask[:, :width],
                mode,
                num_tokens=num_tokens,
                num_seqs=num_seqs,
                max_tokens=max_tokens,
            )
        )
    torch.testing.assert_close(torch.stack(parts).sum(), full)


def test_split_batches_with_local_normalizers_do_not_match() -> None:
    # Why the contract exists: token-mean with each part's own token count weights parts differently.
    per_token, mask = _random_batch()
    full = aggregate_loss(per_token, mask, "token-mean")
    local = sum(aggregate_loss(p, m, "token-mean") for p, m in zip(per_token.split(3), mask.split(3), strict=True))
    assert not torch.allclose(torch.as_tensor(local), full)


@pytest.mark.parametrize("mode", MODES)
def test_split_policy_loss_gradients_sum_to_full_batch(mode: str) -> None:
    per_token, mask = _random_batch()
    old = -torch.rand(6, 7, generator=torch.Generator().manual_seed(1), dtype=F64)
    advantages = t([1.0, -0.5, 2.0, 0.3, -1.5, 0.7])
    cfg = PolicyLossConfig(loss_agg=mode, clip_high=0.28)
    num_tokens = float(mask.sum())

    full_lp = (old + 0.3 * per_token).requires_grad_()
    policy_loss(full_lp, old, advantages, mask, cfg)[0].backward()
    split_lp = (old + 0.3 * per_token).requires_grad_()
    for idx in ([0, 1], [2, 3, 4], [5]):
        policy_loss(
            split_lp[idx], old[idx], advantages[idx], mask[idx], cfg, num_tokens=num_tokens, num_seqs=6.0, max_tokens=7
        )[0].backward()
    assert full_lp.grad is not None and split_lp.grad is not None
    torch.testing.assert_close(split_lp.grad, full_lp.grad)


# --- log-probs, entropy, KL -------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_matches_log_softmax(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator, dtype=F64)
    tokens = torch.randint(0, 11, (2, 5), generator=generator)
    expected = torch.log_softmax(logits / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens, temperature), expected)


def test_token_logprobs_by_hand_and_bf16() -> None:
    logits = t([[[0.0, math.log(3.0)]]])  # softmax = [1/4, 3/4]
    torch.testing.assert_close(token_logprobs(logits, torch.tensor([[1]])), t([[math.log(0.75)]]))
    bf16 = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    tokens = torch.tensor([[0, 7, 3], [1, 1, 2]])
    out = token_logprobs(bf16, tokens)
    assert out.dtype == torch.float32
    expected = torch.log_softmax(bf16.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, expected)


def test_token_logprobs_validation() -> None:
    with pytest.raises(ValueError, match=r"tokens has shape \(2, 4\), expected \(2, 5\)"):
        token_logprobs(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long), temperature=0.0)


def test_entropy() -> None:
    uniform = torch.zeros(2, 3, 16, dtype=F64)
    torch.testing.assert_close(entropy_from_logits(uniform), torch.full((2, 3), math.log(16), dtype=F64))
    logits = torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    for temperature in (1.0, 0.5):
        logp = torch.log_softmax(logits / temperature, dim=-1)
        expected = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(entropy_from_logits(logits, temperature), expected)
    assert entropy_from_logits(logits.to(torch.bfloat16)).dtype == torch.float32


def test_k3_kl_by_hand() -> None:
    logprobs = t([[0.0, 0.0, -1.0]])
    ref = t([[math.log(2.0), -1.0, -1.0]])
    # d = ref - logp: ln 2 -> 2 - ln 2 - 1 = 0.306853; -1 -> e^-1 + 1 - 1 = 0.367879; 0 -> 0.
    expected = t([[1.0 - math.log(2.0), math.exp(-1.0), 0.0]])
    torch.testing.assert_close(k3_kl(logprobs, ref), expected)
    assert expected[0, 0].item() == pytest.approx(0.306853, abs=1e-6)
    assert bool((k3_kl(torch.randn(4, 5), torch.randn(4, 5)) >= 0).all())


# --- policy loss ------------------------------------------------------------------------------------

# Three sequences, clip 0.2 / 0.2 -> ratio clipped to [0.8, 1.2]; per token pg = max(-A*r, -A*clip(r)).
#   seq 0, A = +1: r 1.1 inside -> -1.1;  r 1.5 above -> max(-1.5, -1.2) = -1.2 CLIPPED;  padding
#   seq 1, A = -1: r 0.5 below -> max(0.5, 0.8) = 0.8 CLIPPED;  r 1.5 above -> max(1.5, 1.2) = 1.5;  r 1.0 -> 1.0
#   seq 2, A = +2: r 0.5 below -> max(-1.0, -1.6) = -1.0;  r 0.9 inside -> -1.8;  padding
# 7 real tokens, pg sum -1.8, 2 clipped, ratio mean 7.0 / 7 = 1.
RATIOS = t([[1.1, 1.5, 3.0], [0.5, 1.5, 1.0], [0.5, 0.9, 5.0]])
PL_MASK = t([[1, 1, 0], [1, 1, 1], [1, 1, 0]])
ADV = t([1.0, -1.0, 2.0])
OLD = t([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.0], [-0.7, -0.1, -3.0]])


def _logprobs() -> torch.Tensor:
    return (OLD + RATIOS.log()).requires_grad_()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", -1.8 / 7),
        ("seq-mean", ((-1.1 - 1.2) / 2 + (0.8 + 1.5 + 1.0) / 3 + (-1.0 - 1.8) / 2) / 3),
        ("seq-sum-norm", -1.8 / (3 * 3)),
    ],
)
def test_policy_loss_by_hand(mode: str, expected: float) -> None:
    loss, metrics = policy_loss(_logprobs(), OLD, ADV, PL_MASK, PolicyLossConfig(loss_agg=mode))
    assert loss.item() == pytest.approx(expected)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 7)
    assert metrics["ratio_mean"].item() == pytest.approx(1.0)
    assert metrics["kl"].item() == 0.0
    assert metrics["tis_weight_mean"].item() == 1.0
    assert metrics["tis_clipped_fraction"].item() == 0.0
    assert all(not value.requires_grad and value.dim() == 0 for value in metrics.values())


def test_policy_loss_asymmetric_clip() -> None:
    # DAPO clip-higher 0.28: seq 0's r 1.5 now clips to 1.28 -> -1.28; seq 1's r 1.5 with A < 0 is unchanged.
    loss, metrics = policy_loss(_logprobs(), OLD, ADV, PL_MASK, PolicyLossConfig(clip_high=0.28))
    assert loss.item() == pytest.approx(-1.88 / 7)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 7)


def test_truncated_importance_sampling() -> None:
    # ratio 1 and A = 1 -> pg = -1 per token, times w = min(exp(old - rollout), 2) = [0.5, 1.5, 2 (from 3)].
    old = t([[-1.0, -1.0, -1.0]])
    rollout = old - t([[math.log(0.5), math.log(1.5), math.log(3.0)]])
    cfg = PolicyLossConfig(tis_cap=2.0)
    loss, metrics = policy_loss(
        old.clone().requires_grad_(), old, t([1.0]), torch.ones(1, 3, dtype=F64), cfg, rollout_logprobs=rollout
    )
    assert loss.item() == pytest.approx(-(0.5 + 1.5 + 2.0) / 3)
    assert metrics["tis_weight_mean"].item() == pytest.approx(4 / 3)
    assert metrics["tis_clipped_fraction"].item() == pytest.approx(1 / 3)
    # tis_cap=None turns it off even when the sampler's log-probs are given.
    cfg_off = PolicyLossConfig(tis_cap=None)
    loss, metrics = policy_loss(
        old.clone().requires_grad_(), old, t([1.0]), torch.ones(1, 3, dtype=F64), cfg_off, rollout_logprobs=rollout
    )
    assert loss.item() == pytest.approx(-1.0)
    assert metrics["tis_weight_mean"].item() == 1.0


def test_kl_penalty() -> None:
    old = t([[0.0, 0.0, -1.0]])
    ref = t([[math.log(2.0), -1.0, -1.0]])
    kl = [1.0 - math.log(2.0), math.exp(-1.0), 0.0]
    mask = torch.ones(1, 3, dtype=F64)
    cfg = PolicyLossConfig(kl_coef=0.1)
    loss, metrics = policy_loss(old.clone().requires_grad_(), old, t([1.0]), mask, cfg, ref_logprobs=ref)
    assert loss.item() == pytest.approx(-1.0 + 0.1 * sum(kl) / 3)  # ratio 1, A 1 -> pg -1 per token
    assert metrics["kl"].item() == pytest.approx(sum(kl) / 3)
    # With kl_coef 0 the KL is still reported but not added.
    loss, metrics = policy_loss(old.clone().requires_grad_(), old, t([1.0]), mask, PolicyLossConfig(), ref_logprobs=ref)
    assert loss.item() == pytest.approx(-1.0)
    assert metrics["kl"].item() == pytest.approx(sum(kl) / 3)


def test_kl_requires_ref() -> None:
    with pytest.raises(ValueError, match="no ref_logprobs"):
        policy_loss(_logprobs(), OLD, ADV, PL_MASK, PolicyLossConfig(kl_coef=0.1))


@pytest.mark.parametrize("mode", MODES)
def test_gradient_at_ratio_one(mode: str) -> None:
    # At ratio 1 nothing is clipped and d(ratio)/d(logprob) = 1, so d loss / d logprob_it = -A_i * mask_it / norm.
    old = t([[-0.5, -1.0, -2.0], [-0.2, -0.9, -1.3]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    advantages = t([1.5, -0.5])
    logprobs = old.clone().requires_grad_()
    loss, _ = policy_loss(logprobs, old, advantages, mask, PolicyLossConfig(loss_agg=mode))
    loss.backward()
    norm = {
        "token-mean": t([[4.0], [4.0]]),  # real tokens
        "seq-mean": t([[3.0 * 2], [1.0 * 2]]),  # own length * num_seqs
        "seq-sum-norm": t([[2.0 * 3], [2.0 * 3]]),  # num_seqs * max_tokens
    }[mode]
    torch.testing.assert_close(logprobs.grad, -advantages.unsqueeze(1) * mask / norm)


def test_policy_loss_shape_errors() -> None:
    cfg = PolicyLossConfig()
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(3, 2\), expected \(3, 3\)"):
        policy_loss(_logprobs(), OLD[:, :2], ADV, PL_MASK, cfg)
    with pytest.raises(ValueError, match=r"advantages has shape \(3, 1\), expected \(3,\)"):
        policy_loss(_logprobs(), OLD, ADV.unsqueeze(1), PL_MASK, cfg)
    with pytest.raises(ValueError, match=r"rollout_logprobs has shape \(3,\), expected \(3, 3\)"):
        policy_loss(_logprobs(), OLD, ADV, PL_MASK, cfg, rollout_logprobs=ADV)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_low": -0.1}, "clip_low and clip_high must be >= 0"),
        ({"clip_high": -0.1}, "clip_low and clip_high must be >= 0"),
        ({"kl_coef": -1.0}, "kl_coef must be >= 0"),
        ({"tis_cap": 0.0}, "tis_cap must be > 0"),
        ({"loss_agg": "sum"}, "unknown loss aggregation 'sum'; valid names: token-mean, seq-mean, seq-sum-norm"),
    ],
)
def test_policy_loss_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyLossConfig(**kwargs)  # type: ignore[arg-type]

"""The learner: policy model, optimizer and the GRPO update, one per Ray Train worker.

Each learner takes its share of the batch, runs it in micro-batches, and the learners SUM their
gradients (an all-reduce over gloo on CPU, NCCL on GPU). Loss normalizers are global (tokens and
sequences of the whole batch), so N learners make exactly the update one learner would make.

The reference policy for the KL term is the frozen base model: with LoRA it is the same network
with the adapter switched off (no second copy); without LoRA, a frozen copy is loaded only when the
KL coefficient is non-zero.

Precision: `model.dtype` bfloat16 is the dtype the forward and backward passes compute in (autocast);
the trained weights and the optimizer's states stay float32, because an AdamW step at a GRPO learning
rate (1e-6 relative to weights of ~1e-2) is below bfloat16's resolution and would round away. Frozen
weights (the LoRA base, the KL reference copy) are stored in bfloat16.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepext.grpo.algorithms import PolicyLossConfig, entropy_from_logits, policy_loss, token_logprobs
from deepext.grpo.batch import LearnerBatch
from deepext.grpo.config import GRPOConfig, ModelSettings

TRAINING_STATE = "training_state.pt"
# Up to this many tokens a row, eager attention's forward+backward beat SDPA's on a CPU (measured on
# the 23M benchmark model: 0.65 vs 0.81 s at 156 tokens, even at ~250, 0.96 vs 0.78 s at 320).
CPU_EAGER_MAX_TOKENS = 256


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def attention_kernel(setting: str, device_type: str, row_tokens: int) -> str:
    """The attention implementation for a micro-batch whose rows are `row_tokens` long.

    SDPA's fused CPU kernel is fast forward but its backward costs 10x its forward on short rows
    (30% of a 156-token micro-batch); plain matrix multiplies win there, and lose once the
    (rows x heads x tokens x tokens) score matrices grow."""
    if setting != "auto":
        return setting
    return "eager" if device_type == "cpu" and row_tokens <= CPU_EAGER_MAX_TOKENS else "sdpa"


def precision(model: ModelSettings, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(compute dtype, dtype the model's weights load in): trained weights stay float32 under
    autocast; a LoRA base is frozen, so it is stored in the compute dtype."""
    compute = resolve_dtype(model.dtype, device)
    return compute, compute if model.lora is not None else torch.float32


class PolicyLearner:
    def __init__(
        self, config: GRPOConfig, *, device: torch.device, total_steps: int, rank: int = 0, world_size: int = 1
    ) -> None:
        from transformers import AutoModelForCausalLM, get_scheduler

        self.config = config
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.compute_dtype, weights = precision(config.model, device)
        model: Any = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=weights)
        model.config.use_cache = False
        if config.model.gradient_checkpointing:
            # Non-reentrant checkpointing: gradients reach LoRA weights without inputs that require grad.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.reference: Any = None
        if config.model.lora is not None:
            from peft import LoraConfig, get_peft_model

            lora = config.model.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.rank,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules),
                    task_type="CAUSAL_LM",
                ),
                autocast_adapter_dtype=True,  # the adapter's weights in float32 over a bfloat16 base
            )
            if self.compute_dtype != torch.float32:
                # PEFT casts each LoRA layer's input to the adapter's float32, and autocast casts it
                # straight back for the matrix multiply: two copies of the activations per layer.
                from peft.tuners.tuners_utils import BaseTunerLayer

                for module in model.modules():
                    if isinstance(module, BaseTunerLayer):
                        module.cast_input_dtype_enabled = False  # type: ignore[attr-defined]
        elif config.algorithm.kl_coef > 0:
            reference: Any = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=self.compute_dtype)
            self.reference = reference.to(device).eval().requires_grad_(False)
        self.model = model.to(device)
        self.model.train()
        if config.model.compile and not compile_decoder_layers(self.model):
            raise ValueError(f"model.compile: {config.model.path} has no Hugging Face decoder layers to compile")
        for network in (self.model, self.reference):
            if network is not None and network.get_output_embeddings() is not None:
                network.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            trainable, lr=optim.learning_rate, betas=optim.betas, weight_decay=optim.weight_decay
        )
        updates = total_steps * config.algorithm.updates_per_batch
        self.scheduler = get_scheduler(
            optim.schedule, self.optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=updates
        )
        # Hugging Face drops the KV cache under gradient checkpointing, and a compiled layer breaks its
        # graph on it; the prompts' pass needs the cache.
        model_settings = config.model
        self.shares_prompts = (
            config.resources.share_prompts
            and not (model_settings.gradient_checkpointing or model_settings.compile)
            and full_attention_cache(self.model.config)
        )
        self.loss_config = PolicyLossConfig(
            clip_low=config.algorithm.clip_low,
            clip_high=config.algorithm.clip_high,
            kl_coef=config.algorithm.kl_coef,
            loss_agg=config.algorithm.loss_agg,
            tis_cap=config.algorithm.tis_cap,
        )

    # ---- forward passes
    def _logits(self, model: Any, batch: LearnerBatch) -> torch.Tensor:
        """Logits of the positions that predict completion tokens, (B, T, V).

        Only the last T + 1 positions go through the output layer (`logits_to_keep`): the prompt's
        logits are never needed.
        """
        t = batch.completion_mask.shape[1]
        kernel = attention_kernel(self.config.model.attention, self.device.type, batch.input_ids.shape[1])
        if model.config._attn_implementation != kernel:
            model.set_attn_implementation(kernel)
        mixed = self.compute_dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=mixed):
            if self.shares_prompts and t > 1:
                first_rows, prompt_of_row = batch.distinct_prompts()
                if len(first_rows) < batch.size:
                    return logits_sharing_prompts(model, batch, first_rows, prompt_of_row, self.device).float()
            out = model(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                position_ids=batch.position_ids.to(self.device),
                logits_to_keep=t + 1,
            )
        return out.logits[:, :t].float()

    @torch.no_grad()
    def _reference_logprobs(self, batch: LearnerBatch) -> torch.Tensor | None:
        if self.config.algorithm.kl_coef == 0:
            return None
        temperature = self.config.sampling.temperature
        tokens = batch.completion_ids.to(self.device)
        if self.reference is not None:
            return token_logprobs(self._logits(self.reference, batch), tokens, temperature)
        with self.model.disable_adapter():
            return token_logprobs(self._logits(self.model, batch), tokens, temperature)

    # ---- the update
    def learn(self, shard: LearnerBatch, *, num_tokens: int, num_seqs: int) -> dict[str, float]:
        """`updates_per_batch` optimizer steps on this learner's shard of a batch.

        `num_tokens` / `num_seqs` are the whole batch's (all learners), so summed gradients are exact.
        """
        temperature = self.config.sampling.temperature
        micro = self.config.resources.micro_batch_size
        max_tokens = self.config.sampling.max_new_tokens
        sums: dict[str, float] = {}
        old_logprobs: list[torch.Tensor] = []
        # The loss is a sum over rows, so the order is free; padding and repeated prompts are not.
        shard = shard.grouped_by_prompt() if self.shares_prompts else shard.sorted_by_length()
        references = [self._reference_logprobs(part) for part in shard.micro_batches(micro)]
        for update in range(self.config.algorithm.updates_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            for index, part in enumerate(shard.micro_batches(micro)):
                logits = self._logits(self.model, part)
                tokens = part.completion_ids.to(self.device)
                logprobs = token_logprobs(logits, tokens, temperature)  # (b, t)
                if update == 0:
                    old_logprobs.append(logprobs.detach())  # on-policy: the policy that sampled the batch
                mask = part.completion_mask.to(self.device)
                loss, metrics = policy_loss(
                    logprobs,
                    old_logprobs[index],
                    part.advantages.to(self.device),
                    mask,
                    self.loss_config,
                    ref_logprobs=references[index],
                    rollout_logprobs=part.rollout_logprobs.to(self.device),
                    num_tokens=num_tokens,
                    num_seqs=num_seqs,
                    max_tokens=max_tokens,
                )
                loss.backward()
                weight = part.num_tokens
                with torch.no_grad():
                    entropy = (entropy_from_logits(logits, temperature) * mask).sum().item()
                    gap = ((logprobs.detach() - part.rollout_logprobs.to(self.device)).abs() * mask).sum().item()
                _add(sums, "loss", float(loss.item()))
                _add(sums, "entropy_sum", entropy)
                _add(sums, "logprob_gap_sum", gap)
                for name, value in metrics.items():
                    _add(sums, f"{name}_sum", float(value.item()) * weight)
                _add(sums, "tokens", float(weight))
            self._all_reduce_gradients()
            if self.config.optim.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(self._trainable(), self.config.optim.grad_clip)
                _add(sums, "grad_norm_sum", float(norm))
            self.optimizer.step()
            self.scheduler.step()
        return sums

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _all_reduce_gradients(self) -> None:
        """Sum gradients over learners, in one flat buffer (one collective per update)."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        params = [p for p in self._trainable()]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for param, grad in zip(params, grads, strict=True):
            count = grad.numel()
            param.grad = flat[offset : offset + count].view_as(grad).clone()
            offset += count

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # ---- checkpoints
    def save(self, folder: Path, *, step: int, extra: dict[str, Any] | None = None) -> None:
        """Model or adapter, optimizer, scheduler, step and RNG states: all that resume needs."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / "policy")
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "extra": extra or {},
        }
        torch.save(state, folder / TRAINING_STATE)

    def load(self, folder: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        policy = folder / "policy"
        if self.config.model.lora is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(str(policy / "adapter_model.safetensors")))
        else:
            weights: dict[str, torch.Tensor] = {}
            for file in sorted(policy.glob("*.safetensors")):
                weights.update(load_file(str(file)))
            self.model.load_state_dict(weights, strict=False)
        state = torch.load(folder / TRAINING_STATE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return dict(state)

    def export(self, folder: Path, tokenizer: Any) -> dict[str, Path]:
        """The final model as Hugging Face folders: `model/` (full or merged) and, with LoRA, `adapter/`.

        The model is written in the compute dtype (bfloat16 halves it); this is the learner's last use.
        """
        folders = {}
        if self.config.model.lora is not None:
            self.model.save_pretrained(folder / "adapter")
            tokenizer.save_pretrained(folder / "adapter")
            folders["adapter"] = folder / "adapter"
            merged = _merged_copy(self.model)
            merged.save_pretrained(folder / "model")
        else:
            self.model.to(self.compute_dtype).save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        folders["model"] = folder / "model"
        return folders


def compile_decoder_layers(model: Any) -> int:
    """torch.compile each decoder layer in place, with dynamic shapes: the layers share one compiled
    graph (their weights are its inputs), and new batch and sequence lengths need no recompile. What
    it buys is fused elementwise work (norms, rotary embeddings, activations, casts), which on a CPU
    is as much time as the matrix multiplies. Returns how many layers were compiled."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def full_attention_cache(model_config: Any) -> bool:
    """Whether every layer of the model caches plain full-attention keys and values, the only cache
    `logits_sharing_prompts` copies rows of (not sliding windows, not linear-attention states)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model_config).layers)


def logits_sharing_prompts(
    model: Any, batch: LearnerBatch, first_rows: torch.Tensor, prompt_of_row: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """The logits `_logits` computes, (B, T, V), with each distinct prompt run through the model once.

    A GRPO group's G completions follow one prompt. The prompts' pass runs the distinct prompts and
    keeps their keys and values; each row's completion then attends to its prompt's copy of them
    (an index into the cache, through which gradients flow back and sum). The prompts' last position
    predicts each row's first completion token; the completion pass predicts the rest.
    """
    from transformers import DynamicCache

    p = batch.prompt_len
    ids, mask, positions = (x.to(device) for x in (batch.input_ids, batch.attention_mask, batch.position_ids))
    first_rows, prompt_of_row = first_rows.to(device), prompt_of_row.to(device)
    prompt_cache = DynamicCache(config=model.config)
    prompts = model(
        input_ids=ids[first_rows, :p],
        attention_mask=mask[first_rows, :p],
        position_ids=positions[first_rows, :p],
        past_key_values=prompt_cache,
        use_cache=True,
        logits_to_keep=1,
    )
    row_cache = DynamicCache(config=model.config)
    layers: list[Any] = list(prompt_cache.layers)  # plain DynamicLayers: see `full_attention_cache`
    for index, layer in enumerate(layers):
        row_cache.update(layer.keys[prompt_of_row], layer.values[prompt_of_row], index)
    completions = model(  # the last completion token predicts nothing that is scored
        input_ids=ids[:, p:-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, p:-1],
        past_key_values=row_cache,
        use_cache=True,
    )
    return torch.cat([prompts.logits[prompt_of_row], completions.logits], dim=1)


def _contiguous_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook for the output layer. With `logits_to_keep` the model hands it a slice of
    the hidden states; a linear layer on a non-contiguous 3D input goes through a batched matmul,
    which in bfloat16 on a CPU copies the whole (vocabulary x hidden) weight for every row (0.8 s of
    a 2.6 s SmolLM2 micro-batch). Contiguous, it is one matrix multiply."""
    return (args[0].contiguous(), *args[1:])


def _merged_copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model).merge_and_unload()


def _add(sums: dict[str, float], key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value

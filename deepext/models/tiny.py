"""Tiny random-weight causal LMs for tests and CPU demos - not pretrained, not useful for answers.

`create_tiny_model(dest)` writes an ordinary Hugging Face folder: a Qwen2-shaped model with random
weights and a byte-level BPE tokenizer trained on the spot (ChatML chat template included), so
transformers, TRL, PEFT and vLLM all load it with no download. Head size is 64 because vLLM's CPU
attention refuses smaller heads. The same arguments and seed always give the same files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepext.errors import InvalidInput

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CHATML_TEMPLATE = (  # the template Qwen2 and SmolLM2 use
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MARKER = "deepext-tiny-random"

# A small, varied corpus so the BPE merges cover ordinary English, digits and JSON punctuation.
_CORPUS_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "be",
    "this",
    "are",
    "from",
    "or",
    "have",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "them",
    "then",
    "she",
    "many",
    "some",
    "so",
    "these",
    "would",
    "other",
    "into",
    "has",
    "more",
    "her",
    "two",
    "like",
    "him",
    "see",
    "time",
    "could",
    "no",
    "make",
    "than",
    "first",
    "been",
    "its",
    "who",
    "now",
    "people",
    "my",
    "made",
    "over",
    "did",
    "down",
    "only",
    "way",
    "find",
    "use",
    "may",
    "water",
    "long",
    "little",
    "very",
    "after",
    "words",
    "called",
    "just",
    "where",
    "most",
    "know",
    "answer",
    "question",
    "number",
    "true",
    "false",
    "yes",
    "json",
    "name",
    "value",
    "city",
    "country",
    "capital",
    "France",
    "Paris",
    "Germany",
    "Berlin",
    "Italy",
    "Rome",
    "Spain",
    "Madrid",
    "Japan",
    "Tokyo",
]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny model; the defaults make a ~0.4M-parameter model that loads in a second."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 256
    vocab_size: int = 512
    max_position_embeddings: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise InvalidInput("hidden_size must be a multiple of num_heads", field="hidden_size")
        if self.hidden_size // self.num_heads < 32:
            raise InvalidInput("head size (hidden_size / num_heads) must be at least 32 for vLLM", field="num_heads")
        if self.num_heads % self.num_kv_heads:
            raise InvalidInput("num_heads must be a multiple of num_kv_heads", field="num_kv_heads")
        if self.vocab_size < 300:
            raise InvalidInput("vocab_size must be at least 300 (256 bytes + merges + specials)", field="vocab_size")


def _corpus(seed: int, lines: int = 2000) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(lines):
        words = rng.choices(_CORPUS_WORDS, k=rng.randint(4, 16))
        if i % 4 == 0:
            out.append(json.dumps({"answer": " ".join(words[:3]), "n": rng.randint(0, 999)}))
        else:
            out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
    return out


def build_tokenizer(vocab_size: int, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained locally, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=1024,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def create_tiny_model(dest: Path | str, spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny random Qwen2 model + tokenizer folder to `dest` and return its path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    spec = spec or TinyModelSpec()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size, spec.seed)
    vocab = len(tokenizer)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=int(tokenizer.convert_tokens_to_ids("<|im_start|>")),  # type: ignore[arg-type]
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    config.update({"head_dim": spec.hidden_size // spec.num_heads})  # read by vLLM; not a typed argument
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "deepext.json").write_text(json.dumps({"kind": MARKER, "spec": asdict(spec)}, indent=2) + "\n")
    (dest / "README.md").write_text(
        "# Tiny random model (deepext)\n\nRandom weights for tests and CPU demos; it knows nothing.\n"
        f"Made by `deepext models create-tiny` with {asdict(spec)}.\n"
    )
    return dest


def count_parameters(folder: Path | str) -> int:
    from safetensors import safe_open

    total = 0
    for file in Path(folder).glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                total += _numel(handle.get_slice(name).get_shape())
    return total


def _numel(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out

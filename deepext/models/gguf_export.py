"""Write a Hugging Face model folder as one GGUF file, for Ollama, LM Studio and llama.cpp.

The reverse of `deepext/models/gguf.py`. The writing, the tensor names and the quantization are the
`gguf` package's (maintained with llama.cpp); what is ours is the short recipe llama.cpp's own
converter follows for these two families:

- architectures: `LlamaForCausalLM` (SmolLM2, Llama 3, TinyLlama...) and `Qwen2ForCausalLM`; any
  other is refused naming it. Rope scaling (Llama 3.1's) is refused too: it needs extra tensors.
  The rope base is written from the config (a wrong one loads fine and generates different text).
- weights: 1-D tensors (norms, biases) stay float32; matrices are written in the chosen type. Q8_0
  and the 4/5-bit types quantize blocks of 32 values, so a matrix whose rows are not a multiple of 32
  is written in float16, as llama.cpp does. Llama's q and k projections are permuted into the
  rotary layout llama.cpp expects (transformers' GGUF loader undoes it).
- tokenizer: byte-level BPE (`tokenizer.ggml.model = gpt2`) with the vocabulary, token types
  (added special tokens are CONTROL), merges, special token ids and the chat template embedded; the
  pre-tokenizer name is read from `tokenizer.json` (`smollm`, `llama-bpe`, `qwen2` or `gpt-2`).
  SentencePiece tokenizers are refused for now.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deepext.errors import InvalidInput

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
QUANTIZATIONS = ("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "f32")
_BLOCK = 32  # values per block of the Q types


def check_quantization(name: str) -> str:
    if name not in QUANTIZATIONS:
        raise InvalidInput(f"quantization {name!r} is not one of {', '.join(QUANTIZATIONS)}", field="quantization")
    return name


def gguf_architecture(model_dir: Path) -> tuple[str, dict[str, Any]]:
    """The GGUF architecture name of the model in `model_dir` and its config; refused if unsupported."""
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise InvalidInput(f"{model_dir} is not a model folder (no config.json)", field="model")
    config = json.loads(config_path.read_text())
    names = config.get("architectures") or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        raise InvalidInput(
            f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {', '.join(names) or 'unknown'}",
            field="model",
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise InvalidInput(f"GGUF export does not support rope scaling yet ({rope})", field="model")
    return arch, config


def rope_theta(config: dict[str, Any]) -> float:
    """transformers 5 keeps it in `rope_parameters`, earlier versions at the top level."""
    return float((config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0)


def export_gguf(
    model_dir: Path,
    out: Path,
    quantization: str = "f16",
    *,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the model in `model_dir` (config, safetensors, tokenizer) to the GGUF file `out`.

    `progress(done, total)` is called after each tensor. Returns `out`.
    """
    import gguf

    check_quantization(quantization)
    arch, config = gguf_architecture(model_dir)
    tokenizer = _tokenizer_json(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise InvalidInput(f"{model_dir} has no .safetensors weights", field="model")

    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    file_type, matrix_type = _types(quantization)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    writer.add_name(name or model_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(file_type)
    if arch == "llama":
        writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // heads))
    _add_tokenizer(writer, model_dir, tokenizer, arch, int(config["vocab_size"]))

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2, layers)
    tensors = list(_tensors(weights))
    tied = bool(config.get("tie_word_embeddings", False))
    for done, (hf_name, tensor) in enumerate(tensors, start=1):
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the output layer from token_embd when output.weight is absent
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise InvalidInput(f"{model_dir}: no GGUF name for tensor {hf_name!r}", field="model")
        data = tensor.astype(np.float32)
        if arch == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            data = _rotary_permute(data, heads)
        elif arch == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            data = _rotary_permute(data, kv_heads)
        _add_tensor(writer, target, data, matrix_type)
        if progress is not None:
            progress(done, len(tensors))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)  # a crash leaves no half-written file under the real name
    return out


def _types(quantization: str) -> tuple[int, Any]:
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    return {
        "f32": (F.ALL_F32, Q.F32),
        "f16": (F.MOSTLY_F16, Q.F16),
        "bf16": (F.MOSTLY_BF16, Q.BF16),
        "q8_0": (F.MOSTLY_Q8_0, Q.Q8_0),
        "q5_1": (F.MOSTLY_Q5_1, Q.Q5_1),
        "q5_0": (F.MOSTLY_Q5_0, Q.Q5_0),
        "q4_1": (F.MOSTLY_Q4_1, Q.Q4_1),
        "q4_0": (F.MOSTLY_Q4_0, Q.Q4_0),
    }[quantization]


def _add_tensor(writer: Any, name: str, data: np.ndarray, matrix_type: Any) -> None:
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if data.ndim < 2 or matrix_type == Q.F32:
        writer.add_tensor(name, data)
        return
    if matrix_type == Q.F16 or (matrix_type != Q.BF16 and data.shape[-1] % _BLOCK):
        writer.add_tensor(name, data.astype(np.float16))
        return
    packed = quants.quantize(data, matrix_type)
    writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=matrix_type)


def _rotary_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """transformers' rotate-half layout of q/k rows -> llama.cpp's interleaved pairs (per head)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield key, handle.get_tensor(key).float().numpy()


# ---- tokenizer
def _tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise InvalidInput(f"{model_dir} has no tokenizer.json (a fast tokenizer is needed)", field="model")
    data = json.loads(path.read_text())
    if (data.get("model") or {}).get("type") != "BPE" or not _is_byte_level(data):
        raise InvalidInput(
            f"GGUF export supports byte-level BPE tokenizers; {model_dir.name} has a "
            f"{(data.get('model') or {}).get('type', 'unknown')} tokenizer without byte-level pre-tokenization",
            field="model",
        )
    return data


def _is_byte_level(data: dict[str, Any]) -> bool:
    return "ByteLevel" in json.dumps(data.get("pre_tokenizer"))


def pre_tokenizer_name(arch: str, data: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before the merges (`tokenizer.ggml.pre`)."""
    if arch == "qwen2":
        return "qwen2"
    pre = json.dumps(data.get("pre_tokenizer"))
    if "Digits" in pre:
        return "smollm"  # digits one by one, then GPT-2's byte-level split
    if "Split" in pre and "\\\\p{N}{1,3}" in pre:
        return "llama-bpe"  # Llama 3's regex
    return "gpt-2"


def _add_tokenizer(writer: Any, model_dir: Path, data: dict[str, Any], arch: str, vocab_size: int) -> None:
    import gguf

    vocab: dict[str, int] = data["model"]["vocab"]
    added = {token["id"]: token for token in data.get("added_tokens", [])}
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, index in vocab.items():
        if index < vocab_size:
            tokens[index], types[index] = text, gguf.TokenType.NORMAL
    for index, token in added.items():
        if index < vocab_size:
            tokens[index] = token["content"]
            types[index] = gguf.TokenType.CONTROL if token.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(arch, data))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges, bos/eos/pad ids and the chat template, from the folder's tokenizer files.
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


# ---- checking an export
def round_trip(source: Path, gguf_path: Path, prompts: list[str], new_tokens: int = 16) -> dict[str, float]:
    """Load `gguf_path` back with transformers' GGUF loader and compare it with the model in `source`:
    the share of prompts tokenized the same, of greedy continuations equal, and of tokens equal."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    loaded_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    same = sum(tokenizer(p).input_ids == loaded_tokenizer(p).input_ids for p in prompts)
    expected = _greedy(model.eval(), tokenizer, prompts, new_tokens)
    got = _greedy(loaded.eval(), tokenizer, prompts, new_tokens)
    tokens = sum(x == y for a, b in zip(expected, got, strict=True) for x, y in zip(a, b, strict=True))
    return {
        "tokenization": same / len(prompts),
        "chat_template": float(loaded_tokenizer.chat_template == tokenizer.chat_template),
        "greedy_equal": sum(a == b for a, b in zip(expected, got, strict=True)) / len(prompts),
        "token_agreement": tokens / (len(prompts) * new_tokens),
    }


def _greedy(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Greedy continuations of all prompts in one left-padded batch, each padded to `new_tokens`."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    rows = out[:, batch.input_ids.shape[1] :].tolist()
    return [row + [-1] * (new_tokens - len(row)) for row in rows]  # a batch that ended early is shorter

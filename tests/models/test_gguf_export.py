"""GGUF export: files that transformers' GGUF loader reads back to the same model (greedy tokens equal
in f16, close in q8_0), for the Qwen2-shaped tiny model, a Llama-shaped one (rotary permutation) and
the real SmolLM2-135M-Instruct; the Modelfile against Ollama's syntax; the push to Ollama against a
recorded request sequence (no Ollama server runs here: a local HTTP server records what it gets)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from deepext.errors import InvalidInput
from deepext.models.gguf_export import export_gguf
from deepext.models.gguf_export import round_trip as gguf_round_trip
from deepext.models.ollama import check_modelfile, modelfile
from deepext.platform import Platform
from tests.models.test_gguf import smollm2  # noqa: F401 - the session's converted SmolLM2 (a fixture)
from tests.serve.conftest import Api

PROMPTS = [f"Question {i}: what is {i} plus {i * 3}? Answer in one word about the {w}." for i, w in
           enumerate(["sky", "sea", "tree", "road", "city"] * 10)]  # fmt: skip


def round_trip(source: Path, folder: Path, quantization: str, prompts: list[str], new_tokens: int) -> dict[str, float]:
    path = export_gguf(source, folder / f"model-{quantization}.gguf", quantization)
    return {**gguf_round_trip(source, path, prompts, new_tokens), "bytes": path.stat().st_size}


def llama_copy(tiny_model: Path, folder: Path) -> Path:
    """The tiny model's shapes and tokenizer as a Llama (rotary q/k rows permuted in GGUF), with a rope
    base that is not the default one."""
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    qwen = AutoConfig.from_pretrained(tiny_model)
    config = LlamaConfig(
        vocab_size=qwen.vocab_size, hidden_size=qwen.hidden_size, intermediate_size=qwen.intermediate_size,
        num_hidden_layers=qwen.num_hidden_layers, num_attention_heads=qwen.num_attention_heads,
        num_key_value_heads=qwen.num_key_value_heads, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=qwen.bos_token_id, eos_token_id=qwen.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},  # not the default: it must travel
    )  # fmt: skip
    torch.manual_seed(3)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, folder / name)
    return folder


@pytest.mark.parametrize("shape", ["qwen2", "llama"])
def test_tiny_models_round_trip_f16_equal_and_q8_0_close(tiny_model: Path, tmp_path: Path, shape: str) -> None:
    source = tiny_model if shape == "qwen2" else llama_copy(tiny_model, tmp_path / "llama")
    f16 = round_trip(source, tmp_path / "f16", "f16", PROMPTS, 12)
    q8 = round_trip(source, tmp_path / "q8", "q8_0", PROMPTS, 12)
    print(f"\n{shape}: f16 {f16}\n{shape}: q8_0 {q8}")
    assert f16["tokenization"] == 1.0 and q8["tokenization"] == 1.0 and f16["chat_template"] == 1.0
    assert f16["greedy_equal"] == 1.0
    assert q8["token_agreement"] >= 0.8 and q8["bytes"] < f16["bytes"]


@pytest.mark.slow
def test_smollm2_gguf_holds_its_weights_f16_exactly_and_q8_0_within_a_quantization_step(
    smollm2: Any,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The real SmolLM2-135M-Instruct, read back with the gguf package's reader (transformers' loader
    takes ~40 s per file here: the greedy agreement over 50 prompts is `examples/gguf_export/run.py`;
    the loader round trip runs above on the tiny models): every tensor, the rope base, the
    vocabulary and the chat template."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from deepext.models.gguf_export import _rotary_permute

    source: dict[str, np.ndarray] = {}
    for file in smollm2.folder.glob("*.safetensors"):
        source.update(load_file(str(file)))
    tokenizer = AutoTokenizer.from_pretrained(smollm2.folder)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
    hf_name = {names.get_name(k, try_suffixes=(".weight", ".bias")): k for k in source}
    for quantization in ("f16", "q8_0"):
        reader = gguf.GGUFReader(export_gguf(smollm2.folder, tmp_path / f"m-{quantization}.gguf", quantization))
        field = {name: value.contents() for name, value in reader.fields.items()}
        assert field["general.architecture"] == "llama" and field["llama.rope.freq_base"] == 100000.0
        assert (field["llama.attention.head_count"], field["llama.attention.head_count_kv"]) == (9, 3)
        assert field["tokenizer.ggml.tokens"] == tokenizer.convert_ids_to_tokens(list(range(49152)))
        assert field["tokenizer.chat_template"] == tokenizer.chat_template
        assert field["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert len(reader.tensors) == len(source) - ("lm_head.weight" in source)  # tied: no output.weight
        for tensor in reader.tensors:
            name = hf_name[tensor.name]
            expected = source[name].astype(np.float32)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                expected = _rotary_permute(expected, 9 if "q_proj" in name else 3)
            got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(expected.shape)
            if expected.ndim == 1:
                np.testing.assert_array_equal(got, expected)  # norms stay float32
            elif quantization == "f16":
                np.testing.assert_array_equal(got, expected.astype(np.float16).astype(np.float32))
            else:  # Q8_0: blocks of 32 integers times a float16 scale of max|x| / 127: half a step off,
                blocks, values = expected.reshape(-1, 32), got.reshape(-1, 32)  # plus the scale's own
                step = np.abs(blocks).max(axis=1, keepdims=True) / 127  # rounding over up to 127 steps
                assert bool((np.abs(values - blocks) <= step * (0.5 + 127 * 2**-11) + 1e-7).all()), tensor.name


def test_an_unsupported_architecture_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(InvalidInput, match="GPT2LMHeadModel"):
        export_gguf(folder, tmp_path / "out" / "m.gguf", "f16")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidInput, match="q3_k"):
        export_gguf(folder, tmp_path / "out" / "m.gguf", "q3_k")


# ---- the Modelfile
def test_the_modelfile_of_a_chatml_model_is_valid_ollama_syntax() -> None:
    text = modelfile("m-q8_0.gguf", chat_template="{{ '<|im_start|>' }}", stop=["<|im_end|>", "<|endoftext|>"])
    assert check_modelfile(text) == []
    assert text.startswith("FROM ./m-q8_0.gguf\n") and 'TEMPLATE """' in text and "{{ range .Messages }}" not in text
    assert "{{- range .Messages }}<|im_start|>{{ .Role }}" in text and "PARAMETER stop <|im_end|>" in text
    assert "TEMPLATE" not in modelfile("m.gguf", chat_template="[INST]", stop=[])  # Ollama reads the GGUF's


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("PARAMETER temperature 0.2\n", "no FROM instruction"),
        ("FROM ./m.gguf\nPARAMS temperature 1\n", "line 2: unknown instruction 'PARAMS'"),
        ("FROM ./m.gguf\nPARAMETER temprature 1\n", "line 2: unknown parameter 'temprature'"),
        ("FROM ./m.gguf\nPARAMETER num_ctx lots\n", "line 2: parameter num_ctx wants a int, got 'lots'"),
        ('FROM ./m.gguf\nTEMPLATE """{{ .Prompt }}\n', "line 2: TEMPLATE opens a triple quote that never closes"),
        ("FROM ./m.gguf\nMESSAGE robot hi\n", "line 2: MESSAGE role 'robot'"),
        ("FROM\n", "line 1: FROM needs a value"),
    ],
)
def test_a_bad_modelfile_is_reported_naming_the_line(text: str, problem: str) -> None:
    problems = check_modelfile(text)
    assert any(p.startswith(problem) for p in problems), problems


def test_a_multiline_template_and_comments_are_valid() -> None:
    text = '# made by deepext\nFROM ./m.gguf\nSYSTEM """You are\nhelpful."""\nPARAMETER top_p 0.9\nMESSAGE user hi\n'
    assert check_modelfile(text) == []


# ---- the push to Ollama, against a recording server
class OllamaRecorder(BaseHTTPRequestHandler):
    """Answers as Ollama's API does and records (method, path, body digest or JSON) per request."""

    requests: list[tuple[str, str, Any]]
    blobs: set[str]

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        return None

    def do_HEAD(self) -> None:
        digest = self.path.rsplit("/", 1)[-1]
        self.requests.append(("HEAD", self.path, None))
        self.send_response(200 if digest in self.blobs else 404)
        self.end_headers()

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/api/blobs/"):
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            self.requests.append(("POST", self.path, digest))
            ok = self.path.endswith(digest)
            if ok:
                self.blobs.add(digest)
            self._answer(201 if ok else 400, {} if ok else {"error": "digest mismatch"})
        elif self.path == "/api/create":
            request = json.loads(body)
            self.requests.append(("POST", self.path, request))
            missing = [d for d in request["files"].values() if d not in self.blobs]
            self._answer(400 if missing else 200, {"error": "blob missing"} if missing else {"status": "success"})
        else:
            self._answer(404, {"error": "not found"})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def ollama_server() -> Iterator[tuple[str, type[OllamaRecorder]]]:
    handler = type("Recorder", (OllamaRecorder,), {"requests": [], "blobs": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()


def test_export_pushes_to_ollama_once_and_registers_the_provider_model(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path, ollama_server: tuple[str, Any]
) -> None:
    from deepext.models.export import export_model_version
    from deepext.models.registry import register_base_model
    from deepext.models.versions import register_model_version
    from deepext.serve.providers.registry import get_provider

    url, recorder = ollama_server
    register_base_model(platform, "tiny", tiny_model, actor="t")
    register_model_version(platform, project=project, name="helper", folder=tiny_model, base_model="tiny", actor="t")
    result = export_model_version(platform, project, "helper@1", quantizations=["f16", "q8_0"], ollama_url=url,
                                  lmstudio_dir=tmp_path / "lmstudio", actor="t")  # fmt: skip

    assert set(result.files) == {"f16", "q8_0"} and all(p.exists() for p in result.files.values())
    assert check_modelfile(result.modelfile.read_text()) == []
    assert result.modelfile.read_text().startswith("FROM ./helper-v1-q8_0.gguf\n")
    digest = "sha256:" + hashlib.sha256(result.files["q8_0"].read_bytes()).hexdigest()
    name = f"{project}-helper:v1"
    assert [(method, path) for method, path, _ in recorder.requests] == [
        ("HEAD", f"/api/blobs/{digest}"),
        ("POST", f"/api/blobs/{digest}"),
        ("POST", "/api/create"),
    ]
    assert recorder.requests[1][2] == digest  # the uploaded bytes are the file's
    create = recorder.requests[2][2]
    assert create["model"] == name and create["files"] == {"helper-v1-q8_0.gguf": digest}
    assert "<|im_start|>{{ .Role }}" in create["template"] and "<|im_end|>" in create["parameters"]["stop"]
    assert result.ollama == {"model": name, "digest": digest, "uploaded": True, "server": url}
    assert get_provider(platform, project, "ollama").base_url == f"{url}/v1"
    assert result.lmstudio is not None and result.lmstudio.read_bytes() == result.files["q8_0"].read_bytes()

    again = export_model_version(platform, project, "helper@1", quantizations=["q8_0"], ollama_url=url, actor="t")
    assert again.ollama is not None and again.ollama["uploaded"] is False  # the server had the blob
    assert [m for m, _, _ in recorder.requests[3:]] == ["HEAD", "POST"]


def test_an_unreachable_ollama_fails_naming_it(platform: Platform, project: str, tiny_model: Path) -> None:
    from deepext.models.export import export_model_version
    from deepext.models.ollama import OllamaError
    from deepext.models.registry import register_base_model
    from deepext.models.versions import register_model_version
    from tests.helpers import free_port

    register_base_model(platform, "tiny", tiny_model, actor="t")
    register_model_version(platform, project=project, name="helper", folder=tiny_model, base_model="tiny", actor="t")
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with pytest.raises(OllamaError, match=f"Ollama at {url} is not reachable"):
        export_model_version(platform, project, "helper@1", quantizations=["q8_0"], ollama_url=url, actor="t")


# ---- the CLI: export with a progress bar, merge a LoRA version
def test_cli_exports_a_version_and_refuses_an_unknown_quantization(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepext.models.registry import register_base_model
    from deepext.models.versions import register_model_version
    from tests.helpers import invoke_cli

    register_base_model(platform, "tiny", tiny_model, actor="t")
    register_model_version(platform, project=project, name="helper", folder=tiny_model, base_model="tiny", actor="t")
    code, output = invoke_cli(platform, monkeypatch, "models", "export", "helper@1", "--project", project,
                              "--quant", "q8_0", "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, output
    assert f"exported {project}/helper@1" in output and "helper-v1-q8_0.gguf" in output
    assert (tmp_path / "out" / "helper-v1-q8_0.gguf").exists() and (tmp_path / "out" / "Modelfile").exists()

    code, output = invoke_cli(platform, monkeypatch, "models", "export", "helper@1", "--project", project,
                              "--quant", "q3_k", "--out", str(tmp_path / "bad"))  # fmt: skip
    assert code != 0 and "quantization 'q3_k' is not one of" in output
    assert not (tmp_path / "bad").exists()


def test_a_lora_version_merges_into_a_full_version_with_its_lineage(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from deepext.models.registry import register_base_model
    from deepext.models.versions import get_model_version, lineage, register_model_version
    from tests.helpers import invoke_cli

    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(adapter)
    register_base_model(platform, "tiny", tiny_model, actor="t")
    register_model_version(platform, project=project, name="helper", folder=tiny_model, base_model="tiny",
                           kind="lora", adapter_folder=adapter, actor="t")  # fmt: skip

    code, output = invoke_cli(platform, monkeypatch, "models", "merge", "helper@1", "--project", project)
    assert code == 0, output
    assert f"{project}/helper@2: full model merged from helper@1" in output
    merged = get_model_version(platform, project, "helper@2")
    assert merged.kind == "full" and merged.parent == "helper@1"
    assert [getattr(step, "ref", None) or step.name for step in lineage(platform, project, "helper@2")] == [
        "helper@2", "helper@1", "tiny"
    ]  # fmt: skip
    code, output = invoke_cli(platform, monkeypatch, "models", "merge", "helper@2", "--project", project)
    assert code != 0 and "is a full version; only lora versions merge" in output


# ---- export as a job: what the API (and the Models page's button) queues
def test_an_export_job_is_queued_pinned_and_refused_naming_the_field(
    api: Api, tiny_model: Path, tmp_path: Path
) -> None:
    from deepext.models.registry import register_base_model
    from deepext.models.versions import register_model_version
    from deepext.train import list_jobs

    platform = api.platform
    register_base_model(platform, "tiny", tiny_model, actor="t")
    register_model_version(platform, project="p", name="helper", folder=tiny_model, base_model="tiny", actor="t")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    register_model_version(
        platform,
        project="p",
        name="lora",
        folder=tiny_model,
        base_model="tiny",
        kind="lora",
        adapter_folder=adapter,
        actor="t",
    )

    queued = api.call("POST", "/projects/p/models/helper/export", "maintainer", json={"quantizations": ["q8_0"]})
    assert queued.status_code == 201, queued.text
    job = queued.json()
    assert (job["kind"], job["config"]["model"], job["resources"]) == ("export", "helper@1", {"CPU": 1.0, "GPU": 0.0})
    refused = [
        ("helper", {"quantizations": ["q8_0", "q3_k"]}, "quantizations[1]"),
        ("helper", {"quantizations": []}, "quantizations"),
        ("helper", {"ollama": True}, "ollama"),  # no Ollama server configured
        ("helper", {"lmstudio": True}, "lmstudio"),
        ("nope", {}, "model"),
    ]
    for ref, body, field in refused:
        answer = api.call("POST", f"/projects/p/models/{ref}/export", "maintainer", json=body)
        assert answer.status_code == 422 and answer.json()["error"]["field"] == field, (ref, body, answer.text)
    assert api.call("POST", "/projects/p/models/helper/export", "member", json={}).status_code == 403
    assert [j.kind for j in list_jobs(platform, project="p")] == ["export"]  # the refused ones queued nothing
    lora = api.call("POST", "/projects/p/models/lora@1/export", "maintainer", json={})  # its merged weights
    assert lora.status_code == 201 and lora.json()["config"]["quantizations"] == ["f16", "q8_0"]

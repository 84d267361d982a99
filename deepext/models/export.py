"""Model versions out to local tools: GGUF files with an Ollama Modelfile, pushed to an Ollama server
or written into LM Studio's models folder; and a LoRA version merged into a complete version.

    export_model_version(platform, "demo", "support@3", quantizations=["f16", "q8_0"],
                         ollama_url="http://localhost:11434", lmstudio_dir=Path("~/.lmstudio/models"))

The files go to `<home>/exports/<project>/<name>-v<N>/` (or `out_dir`): one `<name>-v<N>-<quant>.gguf`
per quantization and a `Modelfile` that names the preferred one (q8_0 if made, else the first).
Pushed to Ollama, the model is `<project>-<name>:v<N>` there, and the project's `ollama` provider
(created if missing) lets clients call it as `PROJECT/ollama/<project>-<name>:v<N>`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepext import audit
from deepext.errors import InvalidInput, NotFound, invalid_config
from deepext.models.gguf_export import check_quantization, export_gguf, gguf_architecture
from deepext.models.versions import ModelVersionView, get_model_version, model_version_path, register_model_version
from deepext.platform import Platform
from deepext.projects import get_project

PREFERRED = ("q8_0", "f16", "bf16", "q5_1", "q5_0", "q4_1", "q4_0", "f32")
OLLAMA_PROVIDER = "ollama"


@dataclass(frozen=True)
class ExportResult:
    version: str  # PROJECT/NAME@N
    folder: Path
    files: dict[str, Path]  # quantization -> GGUF file
    modelfile: Path
    seconds: float
    ollama: dict[str, Any] | None = None  # what the push did: model, digest, uploaded, server
    lmstudio: Path | None = None
    sizes: dict[str, int] = field(default_factory=dict)


class ExportJob(BaseModel):
    """The config of an `export` job: which version, which GGUF types, and whether to hand the result to
    the Ollama server and the LM Studio folder the platform is configured with."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(..., description="NAME@N, NAME (newest), NAME@STAGE or NAME@TAG; pinned to NAME@N.")
    quantizations: list[str] = Field(default_factory=lambda: ["f16", "q8_0"], min_length=1)
    ollama: bool = Field(False, description="Push to DEEPEXT_OLLAMA_URL and register it as a provider model.")
    lmstudio: bool = Field(False, description="Copy into DEEPEXT_LMSTUDIO_MODELS_DIR.")


def check_export_job(platform: Platform, project: str, config: dict[str, Any]) -> dict[str, Any]:
    """The export job's config with its version pinned, or InvalidInput naming the field: a type that
    is not made, a version that does not exist or is of an unsupported architecture, a push to a tool
    the platform has no address for. A LoRA version exports the merged weights stored with it."""
    try:
        job = ExportJob.model_validate(config)
    except ValidationError as exc:
        raise invalid_config("export job config", exc) from exc
    for index, quantization in enumerate(job.quantizations):
        try:
            check_quantization(quantization)
        except InvalidInput as exc:
            raise InvalidInput(str(exc), field=f"quantizations[{index}]") from exc
    try:
        version = get_model_version(platform, project, job.model)
    except (NotFound, InvalidInput) as exc:
        raise InvalidInput(f"model: {exc}", field="model") from exc
    pinned = f"{version.name}@{version.version}"
    gguf_architecture(model_version_path(platform, project, pinned))
    if job.ollama and not platform.settings.ollama_url:
        raise InvalidInput("ollama: no Ollama server is configured (DEEPEXT_OLLAMA_URL)", field="ollama")
    if job.lmstudio and not platform.settings.lmstudio_models_dir:
        raise InvalidInput(
            "lmstudio: no LM Studio folder is configured (DEEPEXT_LMSTUDIO_MODELS_DIR)", field="lmstudio"
        )
    return {**job.model_dump(), "model": pinned}


def export_model_version(
    platform: Platform,
    project: str,
    ref: str,
    *,
    quantizations: Sequence[str] = ("f16", "q8_0"),
    out_dir: Path | None = None,
    ollama_url: str | None = None,
    ollama_name: str | None = None,
    lmstudio_dir: Path | None = None,
    actor: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> ExportResult:
    """GGUF files (and a Modelfile) of a model version; optionally pushed to Ollama and LM Studio.
    Everything is checked before anything is written: the version, its architecture, the types and
    (air-gapped) the Ollama address."""
    from deepext.models import ollama

    started = time.perf_counter()
    quantizations = list(dict.fromkeys(check_quantization(q) for q in quantizations))
    if not quantizations:
        raise InvalidInput("name at least one quantization", field="quantizations")
    version = get_model_version(platform, project, ref)
    source = model_version_path(platform, project, ref)
    gguf_architecture(source)  # an unsupported model is refused before any file is written
    if ollama_url:
        from deepext.serve.providers.registry import check_air_gap, check_base_url

        check_air_gap(platform.settings, OLLAMA_PROVIDER, check_base_url(ollama_url))
    stem = f"{version.name}-v{version.version}"
    folder = (out_dir or platform.settings.home / "exports" / project / stem).expanduser()
    files: dict[str, Path] = {}
    for quantization in quantizations:
        files[quantization] = export_gguf(
            source,
            folder / f"{stem}-{quantization}.gguf",
            quantization,
            name=f"{project}/{version.name}@{version.version}",
            progress=_per_quantization(progress, quantization),
        )
    preferred = next(files[q] for q in PREFERRED if q in files)
    chat_template, stop = _chat_settings(source)
    modelfile = folder / "Modelfile"
    modelfile.write_text(ollama.modelfile(preferred.name, chat_template=chat_template, stop=stop))

    pushed = None
    if ollama_url:
        name = ollama_name or f"{project}-{version.name}:v{version.version}".lower()
        pushed = ollama.push(ollama_url, preferred, name, chat_template=chat_template, stop=stop)
        _ensure_ollama_provider(platform, project, ollama_url, name, actor=actor)
    copied = None
    if lmstudio_dir is not None:
        # LM Studio lists <models>/<publisher>/<model>/<file>.gguf
        target = lmstudio_dir.expanduser() / "deepext" / f"{project}-{stem}"
        target.mkdir(parents=True, exist_ok=True)
        copied = target / preferred.name
        shutil.copyfile(preferred, copied)

    result = ExportResult(
        version=f"{project}/{version.name}@{version.version}",
        folder=folder,
        files=files,
        modelfile=modelfile,
        seconds=time.perf_counter() - started,
        ollama=pushed,
        lmstudio=copied,
        sizes={q: path.stat().st_size for q, path in files.items()},
    )
    with platform.db.session() as session:
        audit.record(
            session,
            actor=actor,
            action="model_version.export",
            resource=f"model:{result.version}",
            project_id=get_project(session, project).id,
            detail={
                "format": "gguf",
                "files": {q: str(p) for q, p in files.items()},
                "ollama": pushed,
                "lmstudio": str(copied) if copied else None,
            },
        )
    return result


def _per_quantization(
    progress: Callable[[str, int, int], None] | None, quantization: str
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(quantization, done, total)


def _chat_settings(folder: Path) -> tuple[str | None, list[str]]:
    """The chat template and the end-of-turn token(s) that should stop generation."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text()
    stop = [token for token in ("<|im_end|>",) if template and token in template]
    eos = config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if isinstance(eos, str) and eos not in stop:
        stop.append(eos)
    return template, stop


def _ensure_ollama_provider(platform: Platform, project: str, url: str, model: str, *, actor: str) -> None:
    """The project's `ollama` provider points at `url` and allows `model` (if it keeps an allow-list)."""
    from deepext.errors import NotFound
    from deepext.serve.providers.registry import (
        ProviderCreate,
        ProviderUpdate,
        create_provider,
        get_provider,
        update_provider,
    )

    base_url = url.rstrip("/").removesuffix("/v1") + "/v1"
    try:
        current = get_provider(platform, project, OLLAMA_PROVIDER)
    except NotFound:
        create_provider(
            platform, project=project, spec=ProviderCreate(name=OLLAMA_PROVIDER, base_url=base_url), actor=actor
        )
        return
    changes: dict[str, Any] = {}
    if current.base_url != base_url:
        changes["base_url"] = base_url
    if current.models is not None and model not in current.models:
        changes["models"] = [*current.models, model]
    if changes:
        update_provider(platform, project=project, name=OLLAMA_PROVIDER, changes=ProviderUpdate(**changes), actor=actor)


def merge_lora_version(
    platform: Platform, project: str, ref: str, *, name: str | None = None, actor: str
) -> ModelVersionView:
    """A `lora` version as a complete (`full`) model version of its own: the merged weights its
    training wrote, registered with the LoRA version as parent (the lineage goes through it)."""
    version = get_model_version(platform, project, ref)
    if version.kind != "lora":
        raise InvalidInput(
            f"{project}/{version.ref} is a {version.kind} version; only lora versions merge", field="ref"
        )
    merged = model_version_path(platform, project, ref)  # the merged weights, stored with the adapter
    return register_model_version(
        platform,
        project=project,
        name=name or version.name,
        folder=merged,
        base_model=version.base_model,
        kind="full",
        parent=f"{version.name}@{version.version}",
        job_id=version.job_id,
        metrics={**version.metrics, "merged_from": f"{version.name}@{version.version}"},
        actor=actor,
    )

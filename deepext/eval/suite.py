"""Evaluation suites: a YAML file naming a dataset version, how to prompt the model, and the checks
that judge each output; stored in the project as immutable, numbered versions.

    name: support-answers
    dataset: demo/support@golden          # PROJECT/NAME@VERSION or @LABEL; pinned to @N when pushed
    prompt_field: question
    system_prompt: You answer support questions in one sentence.
    generation: {max_new_tokens: 128, temperature: 0.0, seed: 0}
    limit: 200                            # optional: only the first 200 rows
    checks:
      - {name: correct, type: exact_match, params: {reference_field: answer}}
      - {name: no_pii, type: regex, severity: critical, message: "never repeat an email address", ...}

A wrong field fails at load time with its path (`checks[2].type: ...`): every check is built with
`build_check` while parsing, so a typo in a check type or its params never reaches a run. Pushing a
suite pins its dataset reference to the exact version and stores a new version only when the
pinned content differs from the newest version's; the same content returns that version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.datasets.service import parse_ref as parse_dataset_ref
from deepext.db.models import EvalSuite, Project
from deepext.db.versioned import newest_version, version_listing
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.eval.checks import Check, CheckSpec, build_check
from deepext.projects import check_name, get_project

if TYPE_CHECKING:
    from deepext.platform import Platform

_SUITE_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,63})(?:@(?P<version>[0-9]+))?$")
_CHECK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PUSH_ATTEMPTS = 5  # concurrent pushes of one name may take the same number first


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GenerationSettings(_Strict):
    """Sampling for the outputs under test; greedy by default so a run is reproducible."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None


class CheckSettings(_Strict):
    """One check as the YAML declares it (see `deepext.eval.checks` for the types)."""

    name: str = Field(..., pattern=_CHECK_NAME, description="Unique in the suite; what results and gates name.")
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    severity: str = "error"
    message: str = ""
    weight: float = Field(1.0, ge=0)

    def to_spec(self) -> CheckSpec:
        return CheckSpec(
            name=self.name,
            type=self.type,
            params=dict(self.params),
            severity=self.severity,
            message=self.message,
            weight=self.weight,
        )


class SuiteSpec(_Strict):
    """A whole suite. Build it with `parse_suite` / `load_suite`, which also build every check."""

    name: str
    description: str = ""
    dataset: str = Field(..., description="PROJECT/NAME@VERSION or PROJECT/NAME@LABEL (or NAME@... in the project).")
    prompt_field: str = "prompt"
    chat_template: bool = True
    system_prompt: str | None = None
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    checks: list[CheckSettings] = Field(..., min_length=1)
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows.")

    def check_specs(self) -> list[CheckSpec]:
        return [check.to_spec() for check in self.checks]

    def build_checks(self) -> list[Check]:
        """The suite's checks, ready to evaluate outputs (in the order the suite lists them)."""
        return [_build(index, check) for index, check in enumerate(self.checks)]

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the spec: a suite version's identity."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SuiteView:
    """A stored suite version as callers see it (no live database objects leak out)."""

    id: int
    project: str
    name: str
    version: int
    spec: SuiteSpec  # dataset pinned to PROJECT/NAME@N
    content_hash: str
    created_by: str
    created_at: str
    created: bool = False  # True only in the answer to the push that stored this version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# ---- parsing
def parse_suite(data: dict[str, Any] | SuiteSpec) -> SuiteSpec:
    """A validated suite with every check built; InvalidInput names the first wrong field by its path."""
    if isinstance(data, SuiteSpec):
        spec = data
    else:
        if not isinstance(data, dict):
            raise InvalidInput("a suite is a mapping of fields (name, dataset, checks, ...)", field="suite")
        try:
            spec = SuiteSpec.model_validate(data)
        except ValidationError as exc:
            problems = [f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise InvalidInput(
                "invalid suite: " + "; ".join(problems), field=_field_path(exc.errors()[0]["loc"])
            ) from exc
    check_name(spec.name, "suite")
    _check_dataset_ref(spec.dataset)
    seen: set[str] = set()
    for index, check in enumerate(spec.checks):
        if check.name in seen:
            raise InvalidInput(
                f"checks[{index}].name: a check named {check.name!r} comes earlier; names must be unique",
                field=f"checks[{index}].name",
            )
        seen.add(check.name)
        _build(index, check)
    return spec


def load_suite(path: Path | str) -> SuiteSpec:
    """Read and parse a suite YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}", field="suite") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping of suite fields (name, dataset, checks, ...)", field="suite")
    try:
        return parse_suite(data)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}", field=exc.field) from exc


def _build(index: int, check: CheckSettings) -> Check:
    try:
        return build_check(check.to_spec())
    except InvalidInput as exc:
        field = f"checks[{index}]" + (f".{exc.field}" if exc.field else "")
        raise InvalidInput(f"{field}: {exc}", field=field) from exc


def _field_path(loc: tuple[int | str, ...]) -> str:
    """('checks', 2, 'type') -> 'checks[2].type'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "suite"


def _check_dataset_ref(reference: str) -> tuple[str | None, str]:
    owner, _, ref = reference.rpartition("/")
    if owner:
        try:
            check_name(owner, "project")
        except InvalidInput as exc:
            raise InvalidInput(f"dataset: {exc}", field="dataset") from exc
    parse_dataset_ref(ref)  # raises InvalidInput(field="dataset")
    return owner or None, ref


def _pin_dataset(platform: Platform, project: str, reference: str) -> str:
    """`PROJECT/NAME@LABEL` (or a name in the suite's project) -> the exact `PROJECT/NAME@N`."""
    owner, ref = _check_dataset_ref(reference)
    try:
        return platform.datasets.get(owner or project, ref).ref
    except NotFound as exc:
        raise InvalidInput(f"dataset: {exc}", field="dataset") from exc


# ---- storing and reading
def parse_suite_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` (newest version) or `NAME@N` -> (name, version)."""
    match = _SUITE_REF.match(ref)
    if not match:
        raise InvalidInput(f"suite reference {ref!r}: expected NAME or NAME@VERSION", field="suite")
    return match["name"], int(match["version"]) if match["version"] else None


def push_suite(
    platform: Platform, project: str, spec_or_path: SuiteSpec | dict[str, Any] | Path | str, *, actor: str
) -> SuiteView:
    """Store a suite as the next version of its name, or return the newest version when it holds the same
    content (after pinning the dataset). A suite whose dataset label moved to a new version is new content.
    """
    spec = load_suite(spec_or_path) if isinstance(spec_or_path, (Path, str)) else parse_suite(spec_or_path)
    spec = spec.model_copy(update={"dataset": _pin_dataset(platform, project, spec.dataset)})
    content_hash = spec.content_hash()
    stored = spec.model_dump(mode="json")
    for _attempt in range(_PUSH_ATTEMPTS):
        try:
            with platform.db.session() as session:
                project_row = get_project(session, project)
                newest = _newest(session, project_row.id, spec.name)
                if newest is not None and newest.content_hash == content_hash:
                    return _view(newest, project_row.name)
                row = EvalSuite(
                    project_id=project_row.id,
                    name=spec.name,
                    version=(newest.version if newest else 0) + 1,
                    spec=stored,
                    content_hash=content_hash,
                    created_by=actor[:64],
                )
                session.add(row)
                session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action="eval_suite.push",
                    resource=f"eval_suite:{project}/{row.name}@{row.version}",
                    project_id=project_row.id,
                    detail={"dataset": spec.dataset, "checks": [c.name for c in spec.checks], "hash": content_hash},
                )
                return _view(row, project_row.name, created=True)
        except IntegrityError:
            continue  # another push took this number; read the newest version again
    raise Conflict(f"suite {project}/{spec.name}: too many concurrent pushes, try again")


def get_suite(platform: Platform, project: str, ref: str) -> SuiteView:
    """The suite version `ref` names: `NAME@N`, or `NAME` for the newest."""
    with platform.db.session() as session:
        project_row = get_project(session, project)
        return _view(resolve_suite(session, project_row, ref), project_row.name)


def list_suites(platform: Platform, project: str, name: str | None = None) -> list[SuiteView]:
    """The newest version of each suite in the project by name, or every version of `name`."""
    with platform.db.session() as session:
        project_row = get_project(session, project)
        rows = session.scalars(version_listing(EvalSuite, project_row.id, name))
        return [_view(row, project_row.name) for row in rows]


def resolve_suite(session: Session, project: Project, ref: str) -> EvalSuite:
    """The stored row `ref` names in `project` (NotFound says what exists)."""
    name, version = parse_suite_ref(ref)
    if version is None:
        row = _newest(session, project.id, name)
    else:
        row = session.scalar(
            select(EvalSuite).where(
                EvalSuite.project_id == project.id, EvalSuite.name == name, EvalSuite.version == version
            )
        )
    if row is not None:
        return row
    newest = _newest(session, project.id, name)
    if newest is None:
        raise NotFound(f"suite {project.name}/{name} not found; push it with `deepext eval suites push FILE`")
    raise NotFound(f"suite {project.name}/{name}@{version} not found; it has versions 1-{newest.version}")


def _newest(session: Session, project_id: int, name: str) -> EvalSuite | None:
    return newest_version(session, EvalSuite, project_id, name)


def _view(row: EvalSuite, project: str, *, created: bool = False) -> SuiteView:
    # Stored specs are read without building their checks, so an old version stays readable even if a
    # check type it uses has since changed; `spec.build_checks()` builds them when a run needs them.
    created_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
    return SuiteView(
        id=row.id,
        project=project,
        name=row.name,
        version=row.version,
        spec=SuiteSpec.model_validate(row.spec, strict=False),
        content_hash=row.content_hash,
        created_by=row.created_by,
        created_at=created_at.isoformat(),
        created=created,
    )


def load_suite_checks(reference: str | None, platform: Any, field: str) -> list[Any]:
    """The check specs of the stored suite `PROJECT/NAME[@N]` (none for None), read before training
    starts so a wrong name fails the run at once. `llm_judge` checks need a judge model's answers
    and are left to evaluation runs."""
    if reference is None:
        return []
    if "/" not in reference:
        raise InvalidInput(f"eval suite {reference!r}: expected PROJECT/NAME[@N]", field=field)
    if platform is None:
        from deepext.config import get_settings
        from deepext.platform import Platform

        platform = Platform.open(get_settings())
    project, name = reference.split("/", 1)
    return [spec for spec in get_suite(platform, project, name).spec.check_specs() if spec.type != "llm_judge"]

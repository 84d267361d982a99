"""The API replica stays free of vLLM: the gateway sends the OpenAI body to the engine's
`EngineServer` as JSON and gets strings and dicts back (`deepext/serve/engine_server.py`).

Importing vLLM's request models there cost seconds of CPU on the first chat request and about
550 MB per API replica (docs/serving.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVE = Path(__file__).resolve().parents[2] / "deepext" / "serve"
HEAVY = ("vllm", "torch", "transformers", "ray.llm", "ray.serve.llm", "deepext.serve.engine_server")
# Run only where an engine is deployed (the deployment controller, the engine's replica).
ENGINE_SIDE = {"engine_server.py", "adapter_loader.py", "deployments.py"}


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_api_module_imports_the_engine_or_its_libraries() -> None:
    offenders = [
        f"{path.relative_to(SERVE)}: {name}"
        for path in sorted(SERVE.rglob("*.py"))
        if path.name not in ENGINE_SIDE
        for name in _imports(path)
        if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)
    ]
    assert offenders == []


def test_the_api_app_loads_without_vllm_or_torch() -> None:
    code = (
        "import sys\n"
        "from deepext.serve.app import create_app\n"
        "import deepext.serve.ingress, deepext.serve.routes.openai\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_scan_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "gateway.py"
    module.write_text("def forward():\n    from ray.serve.llm.openai_api_models import ChatCompletionRequest\n")
    assert _imports(module) == ["ray.serve.llm.openai_api_models"]

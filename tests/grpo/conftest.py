"""Fixtures for the GRPO engine tests: one tiny random model for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepext.models.tiny import TinyModelSpec, create_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("grpo") / "tiny", TinyModelSpec(seed=3))

"""Seeding the demo project: the real demo model and a ready-split dataset, idempotently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deepext.config import Settings
from deepext.demo import seed_demo
from deepext.platform import Platform


@pytest.fixture
def platform(tmp_path: Path, postgres_url: str) -> Iterator[Platform]:
    """On PostgreSQL only: `deepext up`'s first start seeds the demo on SQLite (tests/ops/test_air_gapped.py),
    and a seed converts the real model (~20 s), too slow to repeat for nothing new."""
    opened = Platform.open(Settings(home=tmp_path / "home", database_url=postgres_url))
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.slow
def test_seed_demo_registers_smollm2_and_a_split_dataset(platform: Platform) -> None:
    seeded = seed_demo(platform)
    assert seeded.base_model == "smollm2-135m-instruct"
    assert platform.datasets.get("demo", "capitals@train").row_count == 84
    assert platform.datasets.get("demo", "capitals@eval").row_count == 21
    assert platform.datasets.get("demo", "capitals@1").format == "prompt_reference"
    again = seed_demo(platform)  # a second start finds everything in place
    assert again == seeded
    assert [v.version for v in platform.datasets.versions("demo", "capitals")] == [1, 2, 3]

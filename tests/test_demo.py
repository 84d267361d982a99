"""Seeding the demo project: the real demo model and a ready-split dataset, idempotently."""

from __future__ import annotations

import pytest

from deepext.demo import seed_demo
from deepext.platform import Platform


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

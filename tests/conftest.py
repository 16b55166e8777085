"""Shared fixtures: test policies and paths. Tier fixtures live in each tier's conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
POLICIES = TESTS / "policies"
REPO = TESTS.parent


@pytest.fixture
def basic_policy() -> Path:
    return POLICIES / "basic.yaml"

"""Shared test fixtures."""
from pathlib import Path

import pytest

# CI clones the repository with shared/ beside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real shared data directory; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (clone shared/ beside the repository)")
    return SHARED_DATA

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


# --- real tiny reward models, loaded once per session (tests/test_model.py, tests/test_train.py) ---

@pytest.fixture(scope="session")
def rm_minilm():
    """critcore's MiniLM reward model with a seeded fresh head, in eval mode. Do not train it."""
    from transformers import set_seed

    from critcore.model import RewardModel

    set_seed(0)
    return RewardModel.load("minilm").eval()


@pytest.fixture(scope="session")
def rm_smollm2():
    """critcore's SmolLM2-135M reward model with a seeded fresh head, in eval mode. Do not train it."""
    from transformers import set_seed

    from critcore.model import RewardModel

    set_seed(0)
    return RewardModel.load("smollm2").eval()

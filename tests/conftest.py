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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (pytestmark = usefixtures): on shared, busy cores two
    threads run several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

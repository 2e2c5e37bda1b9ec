import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"


@pytest.fixture
def cifar10_dir():
    if not (CIFAR10 / "train").is_dir():
        pytest.skip(f"real CIFAR-10 folder not found at {CIFAR10}")
    return CIFAR10

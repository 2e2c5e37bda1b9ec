import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"

# Two logical CPUs for the whole session, so MirroredStrategy tests run in this process
# instead of a fresh Python each. Logical devices can only be configured before TF
# initialises its runtime, i.e. here, before any test module runs TF. Single-device code
# is unaffected: ops are placed on /cpu:0 and the default strategy has one replica.
_CPU = tf.config.list_physical_devices("CPU")[0]
try:
    tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # the runtime was already up (e.g. a plugin ran TF first)
    pass


def require_cifar10() -> Path:
    """The real CIFAR-10 folder; in CI (``$CI`` set) its absence fails, elsewhere it skips."""
    if (CIFAR10 / "train").is_dir():
        return CIFAR10
    message = f"real CIFAR-10 folder not found at {CIFAR10}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it (tests/conftest.py)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cifar10_dir():
    return require_cifar10()


@pytest.fixture(scope="session")
def two_cpus():
    """The session's one MirroredStrategy over this process's two logical CPUs (set up
    above). Tests share it rather than make their own: each new MirroredStrategy in a
    process numbers its collective ops from the same keys, and the collectives of two
    strategies (sync BN, all-gathers) then collide ("Collective instance 100 expected ...")."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, (
        "two logical CPUs are configured in tests/conftest.py before TensorFlow starts; "
        f"this process has {devices}"
    )
    return tf.distribute.MirroredStrategy(devices[:2])


# The flags of the shared tiny run: 64 digits, batches of 16, one epoch (4 steps),
# checkpoints at steps 0, 2, 4 and the best (kNN every epoch), no export.
SHARED_RUN_FLAGS = ("--noexport", "--epochs=1", "--checkpoint_every=2")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny finished run (ASCL, digits, 16 px, width 4, 4 steps), trained once per
    session. Read-only: a test that writes into it works on a copy (``shutil.copytree``)."""
    from helpers import FOUR_STEP_EPOCH_FLAGS, train_in_process

    from tfascl import runs

    model_dir = tmp_path_factory.mktemp("shared") / "run"
    result = train_in_process(*FOUR_STEP_EPOCH_FLAGS, *SHARED_RUN_FLAGS, f"--model_dir={model_dir}")
    assert result.exit_code == 0 and result.summary["steps"] == 4
    assert runs.best_checkpoint(model_dir).endswith("best-4")
    return model_dir

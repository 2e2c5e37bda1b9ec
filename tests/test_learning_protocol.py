"""benchmarks/learning.py trains through tfascl-train's TrainConfig: with its flagfile, the
config is the recorded protocol's (benchmarks/results/learning_*.json), and the model it
builds is the one the recorded runs built. Nothing is trained here."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import learning
from tfascl import train
from tfascl.runs import RunSpec
from tfascl.train_config import check_replicas

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted((REPO / "benchmarks" / "results").glob("learning_*_seed*.json"))


@pytest.fixture
def protocol():
    learning.FLAGS.unparse_flags()
    flagfile = REPO / "benchmarks" / "learning.flags"
    learning.FLAGS(["learning", f"--flagfile={flagfile}", "--method=ascl", "--seed=3"])
    yield learning.protocol_config(Path("subset"), Path("run"))
    learning.FLAGS.unparse_flags()


def test_the_flagfile_gives_the_recorded_settings(protocol):
    assert RECORDS, "no recorded learning runs"
    for path in RECORDS:
        settings = json.loads(path.read_text())["settings"]
        for name, value in settings.items():
            assert learning.FLAGS[name].value == value, (path.name, name)
            # The subset is drawn by the script (a folder of links): the rest go to TrainConfig.
            if hasattr(protocol, name) and name != "max_train_examples":
                assert getattr(protocol, name) == value, (path.name, name)


def test_the_config_keeps_what_the_recorded_script_fixed(protocol):
    c = protocol
    assert (c.method, c.seed, c.dataset, c.max_train_examples) == ("ascl", 3, "subset", None)
    # The recorded script: build_optimizer("sgd", WarmupCosine(lr, total, warmup), wd,
    # exclude_bn_and_bias=False), compile(jit_compile=False), images in memory, 32 px,
    # kNN k=200 t=0.1 every --knn_every epochs and at the last.
    assert (c.optimizer, c.schedule, c.scale_lr, c.exclude_bn_bias) == (
        "sgd",
        "cosine",
        False,
        False,
    )
    assert (c.input, c.jit_compile, c.image_size, c.precision) == ("memory", False, 32, "float32")
    assert (c.knn_k, c.knn_t, c.knn_every, c.eval_crop) == (200, 0.1, 3, 1.0)
    assert (c.augment_on, c.key_augment, c.jit_augment) == ("host", "weak", True)


def test_the_model_is_the_recorded_scripts(protocol):
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    config = check_replicas(protocol, replicas=1)
    run_data = train.RunData(SimpleNamespace(mean=mean, std=std), None, None, 10)
    total_steps = config.epochs * (4000 // config.batch_size)
    built = train.make_spec(config, run_data, total_steps)
    # The recorded script's call, with the RunSpec defaults of its day (symmetric=False).
    recorded = RunSpec(
        method="ascl",
        backbone_width=16,
        queue_size=1024,
        batch_size=128,
        total_steps=total_steps,
        mean=mean,
        std=std,
        symmetric=False,
        num_classes=10,
    )
    assert dataclasses.asdict(built) == {**dataclasses.asdict(recorded), "dataset": "subset"}

"""The recipes in flags/: each parses, validates, has a source for every flag, and says
what the papers say; nested flagfiles resolve against the including file."""

import re
from pathlib import Path

import pytest

from tfascl import train_config

FLAGS_DIR = Path(__file__).resolve().parents[1] / "flags"
RECIPES = sorted(p for p in FLAGS_DIR.glob("*.flags") if not p.name.startswith("base_"))
DATASETS = ("cifar10", "cifar100", "stl10", "tinyimagenet")
METHODS = ("moco", "ascl", "ahcl", "hard", "sce", "ressl", "byol", "byol_ascl")


def parse(*args):
    """Parses args as tfascl-train would (flagfiles expanded) into a TrainConfig."""
    train_config.FLAGS.unparse_flags()
    train_config.FLAGS(train_config.expand_flagfiles(["tfascl-train", *args]))
    return train_config.config_from_flags()


@pytest.fixture(autouse=True)
def reset_flags():
    yield
    train_config.FLAGS.unparse_flags()


def test_there_is_a_recipe_for_every_dataset_and_method():
    names = {p.stem for p in RECIPES}
    expected = {f"{d}_{m}" for d in DATASETS for m in METHODS}
    expected |= {"imagenet_ascl", "imagenet_moco", "cpu_smoke"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", sorted(FLAGS_DIR.glob("*.flags")), ids=lambda p: p.name)
def test_every_flag_line_has_a_source_comment_above_it(path):
    lines = [line.strip() for line in path.read_text().splitlines()]
    for number, line in enumerate(lines):
        if line.startswith("--"):
            assert number > 0 and lines[number - 1].startswith("#"), (
                f"{path.name}:{number + 1}: {line} has no comment line above it"
            )
            # absl reads a whole line as the value: a trailing comment would corrupt it.
            assert "#" not in line, f"{path.name}:{number + 1}: trailing comment"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_validates(path, tmp_path):
    # Datasets other than digits are not on this machine: swap the data, keep the rest.
    config = parse(f"--flagfile={path}", "--dataset=digits", f"--model_dir={tmp_path}")
    train_config.validate(config)
    method = path.stem.split("_", 1)[1] if "_" in path.stem else None
    if path.stem != "cpu_smoke":
        assert config.method == method


def test_recipes_carry_the_papers_settings():
    c10 = parse(f"--flagfile={FLAGS_DIR / 'cifar10_ascl.flags'}")
    assert (c10.dataset, c10.backbone, c10.backbone_width, c10.image_size) == (
        "cifar10",
        "resnet18",
        64,
        32,
    )
    assert (c10.batch_size, c10.epochs, c10.learning_rate, c10.weight_decay) == (
        256,
        200,
        0.03,
        5e-4,
    )
    assert (c10.warmup_epochs, c10.schedule, c10.queue_size, c10.momentum) == (
        5,
        "cosine",
        4096,
        0.99,
    )
    assert (c10.temperature, c10.relabel_temperature, c10.num_neighbors) == (0.1, 0.05, 1)
    assert parse(f"--flagfile={FLAGS_DIR / 'cifar100_ascl.flags'}").num_neighbors == 5
    sce = parse(f"--flagfile={FLAGS_DIR / 'cifar10_sce.flags'}")
    assert (sce.sce_lambda, sce.relabel_temperature, sce.learning_rate) == (0.5, 0.05, 0.06)
    ressl = parse(f"--flagfile={FLAGS_DIR / 'cifar10_ressl.flags'}")
    assert (ressl.relabel_temperature, ressl.queue_size, ressl.momentum) == (0.04, 4096, 0.99)
    for dataset in ("stl10", "tinyimagenet"):
        ressl = parse(f"--flagfile={FLAGS_DIR / f'{dataset}_ressl.flags'}")
        assert (ressl.queue_size, ressl.momentum, ressl.image_size) == (16384, 0.996, 64)
    byol = parse(f"--flagfile={FLAGS_DIR / 'cifar10_byol.flags'}")
    assert (byol.momentum_schedule, byol.uses_symmetric_loss, byol.projector_bn) == (
        "constant",
        False,
        False,
    )
    imagenet = parse(f"--flagfile={FLAGS_DIR / 'imagenet_ascl.flags'}")
    assert (imagenet.backbone, imagenet.queue_size, imagenet.momentum) == ("resnet50", 65536, 0.999)
    assert (imagenet.weight_decay, imagenet.learning_rate, imagenet.scale_lr) == (1e-4, 0.03, True)
    assert (imagenet.temperature, imagenet.relabel_temperature, imagenet.num_neighbors) == (
        0.1,
        0.05,
        1,
    )


def test_flags_after_a_flagfile_override_it():
    config = parse(f"--flagfile={FLAGS_DIR / 'cifar10_ascl.flags'}", "--batch_size=32")
    assert config.batch_size == 32 and config.queue_size == 4096


def test_nested_flagfiles_resolve_against_the_including_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.flags").write_text("# base\n--epochs=7\n")
    (tmp_path / "top.flags").write_text("# top\n--flagfile=sub/base.flags\n// also a comment\n")
    monkeypatch.chdir(FLAGS_DIR.parent.parent)  # anywhere but tmp_path
    assert train_config.expand_flagfiles([f"--flagfile={tmp_path / 'top.flags'}"]) == ["--epochs=7"]
    with pytest.raises(train_config.FlagError, match=r"--flagfile=missing\.flags"):
        train_config.expand_flagfiles(["--flagfile=missing.flags"])


def test_no_flags_is_the_small_digits_default():
    config = parse()
    assert (config.dataset, config.method, config.backbone) == ("digits", "ascl", "resnet18")
    assert 8 <= config.backbone_width <= 32
    assert re.fullmatch(r"runs/ascl_digits", str(train_config.resolve_model_dir(config)))


def test_config_defaults_are_the_flag_defaults():
    assert parse() == train_config.TrainConfig()

"""The recipes in flags/: each parses, validates, has a source for every flag, and says
what the papers say; nested flagfiles resolve against the including file."""

import re
from pathlib import Path

import pytest

from tfascl import train_config
from tfascl.models import METHODS

FLAGS_DIR = Path(__file__).resolve().parents[1] / "flags"
RECIPES = sorted(p for p in FLAGS_DIR.glob("*.flags") if not p.name.startswith("base_"))
DATASETS = ("cifar10", "cifar100", "stl10", "tinyimagenet")


def parse(*args):
    """Parses args as tfascl-train would (flagfiles expanded) into a TrainConfig."""
    return train_config.config_from_args(args)


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


# --- Every recipe's resolved values against their sources, in one table ------------------
# (value, source). A recipe that drifts from its source, or a source comment in flags/
# that changes without the value, fails here with the source named.
ASCL_CODE = {
    "backbone": ("resnet18", "ASCL main.py --arch resnet18"),
    "backbone_width": (64, "torchvision resnet18 (ASCL model.py)"),
    "projector_dims": (
        (2048, 128),
        "ASCL model.py projector Linear(512, 2048)-ReLU-Linear(2048, 128)",
    ),
    "projector_bn": (False, "ASCL model.py: no BN in the projector"),
    "num_splits": (8, "ASCL model.py SplitBatchNorm bn_splits=8"),
    "norm": (None, "ASCL model.py: split BN on one GPU (tfascl's one-device default)"),
    "key_norm": (None, "ASCL model.py: both encoders alike"),
    "batch_size": (256, "ASCL main.py --batch-size 256"),
    "epochs": (200, "ASCL main.py --epochs 200"),
    "optimizer": ("sgd", "ASCL main.py SGD(momentum=0.9)"),
    "learning_rate": (0.03, "ASCL main.py --lr 0.03"),
    "scale_lr": (False, "ASCL main.py: no batch scaling"),
    "weight_decay": (5e-4, "ASCL main.py --wd 5e-4"),
    "exclude_bn_bias": (False, "ASCL main.py: SGD(model.parameters(), weight_decay)"),
    "warmup_epochs": (5, "ASCL main.py --warm_up 5"),
    "schedule": ("cosine", "ASCL main.py --cos"),
    "queue_size": (4096, "ASCL main.py --mem_size 4096"),
    "momentum": (0.99, "ASCL main.py --m 0.99"),
    "momentum_schedule": ("constant", "ASCL model.py _momentum_update_key_encoder"),
    "temperature": (0.1, "ASCL main.py --t1 0.1"),
    "symmetric": (False, "ASCL model.py: one loss direction"),
    "knn_k": (200, "ASCL main.py knn_predict(..., 200, 0.1)"),
    "knn_t": (0.1, "ASCL main.py knn_predict(..., 200, 0.1)"),
}
DATASET_SOURCES = {
    "cifar10": {
        "dataset": ("cifar10", "ASCL main.py"),
        "image_size": (32, "ASCL dataloader.py"),
        "stem": ("cifar", "ASCL model.py"),
    },
    "cifar100": {
        "dataset": ("cifar100", "ASCL main.py"),
        "image_size": (32, "ASCL dataloader.py"),
        "stem": ("cifar", "ASCL model.py"),
    },
    "stl10": {
        "dataset": ("stl10", "ASCL main.py"),
        "image_size": (64, "ASCL dataloader.py"),
        "stem": ("cifar_pool", "ASCL model.py keeps the max-pool"),
    },
    "tinyimagenet": {
        "image_size": (64, "ASCL dataloader.py"),
        "test_split": ("val", "ASCL dataloader.py"),
        "stem": ("cifar_pool", "ASCL model.py keeps the max-pool"),
    },
}
RELABEL = {
    "relabel_temperature": (0.05, "ASCL main.py --t2 0.05"),
    "num_neighbors": (1, "ASCL main.py --K 1"),
}
SCE_CONFIG = "SCE configs/run/pretrain/sce/resnet18/resnet18_cifar10.yaml"
METHOD_SOURCES = {
    "moco": {"method": ("moco", "ASCL main.py --type normal")},
    "ascl": {"method": ("ascl", "ASCL main.py --type ascl"), **RELABEL},
    "ahcl": {"method": ("ahcl", "ASCL main.py --type ahcl"), **RELABEL},
    "hard": {"method": ("hard", "ASCL main.py --type hard"), **RELABEL},
    "byol": {"method": ("byol", "ASCL main.py --model byol --type normal")},
    "byol_ascl": {"method": ("byol_ascl", "ASCL main.py --model byol --type ascl"), **RELABEL},
    "sce": {
        "method": ("sce", SCE_CONFIG),
        "sce_lambda": (0.5, f"{SCE_CONFIG} coeff"),
        "relabel_temperature": (0.05, f"{SCE_CONFIG} temp_m"),
        "temperature": (0.1, f"{SCE_CONFIG} temp"),
        "learning_rate": (0.06, f"{SCE_CONFIG} initial_lr"),
        "projector_dims": ((512, 128), "SCE projector_resnet18_mlp2_bn1.yaml"),
        "projector_bn": (True, "SCE projector_resnet18_mlp2_bn1.yaml norm_layer bn_1D"),
        "norm": ("batch", f"{SCE_CONFIG} gpus 1: whole-batch BN online"),
        "key_norm": ("split", "SCE shuffle_momentum_base.py: split BN in the momentum trunk"),
        "momentum": (0.99, f"{SCE_CONFIG} initial_momentum"),
        "queue_size": (4096, f"{SCE_CONFIG} queue.size"),
        "weight_decay": (5e-4, f"{SCE_CONFIG} weight_decay"),
        "warmup_epochs": (5, f"{SCE_CONFIG} warmup_epochs"),
    },
    "ressl": {
        "method": ("ressl", "ReSSL paper"),
        "relabel_temperature": (0.04, "ReSSL paper τ_t"),
        "temperature": (0.1, "ReSSL paper τ_s"),
    },
}
OVERRIDES = {
    ("cifar100", "ascl"): {"num_neighbors": (5, "ASCL README: the CIFAR-100 example runs --K 5")},
    **{
        (d, "ressl"): {
            "queue_size": (16384, "ReSSL paper: STL-10 and Tiny ImageNet memory"),
            "momentum": (0.996, "ReSSL paper: STL-10 and Tiny ImageNet momentum"),
        }
        for d in ("stl10", "tinyimagenet")
    },
}
MOCO_V2 = "MoCo v2 main_moco.py"
IMAGENET_SOURCES = {
    "dataset": ("imagenet2012", "TFDS ImageNet-1k"),
    "backbone": ("resnet50", MOCO_V2),
    "backbone_width": (64, "torchvision resnet50"),
    "stem": ("imagenet", "torchvision resnet50"),
    "image_size": (224, f"{MOCO_V2} RandomResizedCrop(224)"),
    "projector_dims": ((2048, 128), f"{MOCO_V2} --mlp --moco-dim 128"),
    "projector_bn": (False, f"{MOCO_V2} --mlp"),
    "norm": (None, f"{MOCO_V2}: shuffle BN across GPUs (tfascl's default on several replicas)"),
    "batch_size": (256, f"{MOCO_V2} --batch-size 256"),
    "epochs": (200, "MoCo v2 / ASCL paper"),
    "learning_rate": (0.03, f"{MOCO_V2} --lr 0.03"),
    "scale_lr": (True, "MoCo README: linear lr scaling"),
    "weight_decay": (1e-4, f"{MOCO_V2} --wd 1e-4"),
    "exclude_bn_bias": (False, f"{MOCO_V2} SGD(model.parameters())"),
    "warmup_epochs": (0, f"{MOCO_V2}: no warm-up"),
    "queue_size": (65536, f"{MOCO_V2} --moco-k 65536"),
    "momentum": (0.999, f"{MOCO_V2} --moco-m 0.999"),
    "symmetric": (False, f"{MOCO_V2}: one direction"),
}
IMAGENET_METHODS = {
    "moco": {"method": ("moco", MOCO_V2), "temperature": (0.2, f"{MOCO_V2} --moco-t 0.2")},
    "ascl": {
        "method": ("ascl", "ASCL paper, ImageNet-1k"),
        "temperature": (0.1, "ASCL ImageNet-1K/builder.py T1=0.1"),
        "relabel_temperature": (0.05, "ASCL ImageNet-1K/builder.py T2=0.05"),
        "num_neighbors": (1, "ASCL ImageNet-1K/builder.py nn_num = 1"),
    },
}


def expected_values(stem):
    dataset, method = stem.split("_", 1)
    if dataset == "imagenet":
        return {**IMAGENET_SOURCES, **IMAGENET_METHODS[method]}
    return {
        **ASCL_CODE,
        **DATASET_SOURCES[dataset],
        **METHOD_SOURCES[method],
        **OVERRIDES.get((dataset, method), {}),
    }


# tfascl's own recipes, measured here rather than taken from a paper: the CPU smoke test and
# the first run on digits (test_make_run_uses_the_digits_recipe...).
OWN_RECIPES = ("cpu_smoke", "digits_ascl", "digits_moco")
SOURCED = [p for p in RECIPES if p.stem not in OWN_RECIPES]


@pytest.mark.parametrize("path", SOURCED, ids=lambda p: p.stem)
def test_recipe_values_match_the_table_of_sources(path):
    config = parse(f"--flagfile={path}")
    for name, (value, source) in expected_values(path.stem).items():
        got = getattr(config, name)
        got = tuple(got) if isinstance(got, list) else got
        assert got == value, f"{path.name}: --{name}={got}, but {source} says {value}"


def test_every_recipe_is_in_the_table_of_sources():
    stems = {p.stem for p in SOURCED}
    assert stems == {f"{d}_{m}" for d in DATASET_SOURCES for m in METHOD_SOURCES} | {
        f"imagenet_{m}" for m in IMAGENET_METHODS
    }


def test_recipes_that_carry_values_over_say_so():
    for path in SOURCED:
        text = path.read_text()
        if path.stem.endswith("_ressl"):
            # ReSSL's code for small datasets is not public: the file must say whose values
            # the optimiser and head are.
            assert "not public" in text and "Carried over from the ASCL code" in text, path.name
            assert "ReSSL's ImageNet code" in text, path.name
        if path.stem.endswith("_sce"):
            assert "resnet18_cifar10.yaml" in text and "projector_resnet18_mlp2_bn1.yaml" in text
            assert "shuffle_momentum_base.py" in text, path.name
            if not path.stem.startswith("cifar10_"):
                assert "publishes no" in text and "carried over" in text, path.name


def test_make_run_uses_the_digits_recipe_whose_augmentations_suit_grey_digits():
    makefile = (FLAGS_DIR.parent / "Makefile").read_text()
    assert "RUN_FLAGS ?= --flagfile=flags/digits_ascl.flags" in makefile
    for method in ("ascl", "moco"):
        config = parse(f"--flagfile={FLAGS_DIR / f'digits_{method}.flags'}")
        assert (config.dataset, config.method, config.image_size) == ("digits", method, 16)
        # No flips (a mirrored 2 is no digit), no colour on grey images, crops keep the digit.
        assert config.flip_prob == config.jitter_prob == config.grayscale_prob == 0
        assert config.blur_prob == 0 and config.crop_scale[0] >= 0.5
        assert config.knn_at_start

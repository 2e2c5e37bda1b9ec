"""The recipes in flags/: each parses, validates, has a source for every flag, and says
what the papers say; nested flagfiles resolve against the including file."""

import dataclasses
import re
from pathlib import Path

import pytest

from tfascl import train_config
from tfascl.models import METHODS
from tfascl.options import flag_name

FLAGS_DIR = Path(__file__).resolve().parents[1] / "flags"
RECIPES = sorted(p for p in FLAGS_DIR.glob("*.flags") if not p.name.startswith("base_"))
DATASETS = ("cifar10", "cifar100", "stl10", "tinyimagenet")
# The methods ASCL is measured against (issue 21): a recipe for every dataset and ImageNet.
COMPARED_METHODS = ("simclr", "dcl", "nnclr", "msf", "co2", "moco_dcl")
IMAGENET_RECIPES = ("ascl", "moco", *COMPARED_METHODS)


def parse(*args):
    """Parses args as tfascl-train would (flagfiles expanded) into a TrainConfig."""
    return train_config.config_from_args(args)


def test_there_is_a_recipe_for_every_dataset_and_method():
    names = {p.stem for p in RECIPES}
    expected = {f"{d}_{m}" for d in DATASETS for m in METHODS}
    expected |= {f"imagenet_{m}" for m in IMAGENET_RECIPES} | {"cpu_smoke"}
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
    assert (c10.temperature, c10.target_temperature, c10.num_neighbors) == (0.1, 0.05, 1)
    assert parse(f"--flagfile={FLAGS_DIR / 'cifar100_ascl.flags'}").num_neighbors == 5
    sce = parse(f"--flagfile={FLAGS_DIR / 'cifar10_sce.flags'}")
    assert (sce.sce_lambda, sce.target_temperature, sce.learning_rate) == (0.5, 0.05, 0.06)
    ressl = parse(f"--flagfile={FLAGS_DIR / 'cifar10_ressl.flags'}")
    assert (ressl.target_temperature, ressl.queue_size, ressl.momentum) == (0.04, 4096, 0.99)
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
    assert (imagenet.temperature, imagenet.target_temperature, imagenet.num_neighbors) == (
        0.1,
        0.05,
        1,
    )


def test_compared_methods_recipes_carry_their_published_values():
    def recipe(dataset, method):
        return parse(f"--flagfile={FLAGS_DIR / f'{dataset}_{method}.flags'}")

    for dataset in DATASETS:
        simclr = recipe(dataset, "simclr")  # SimCLR README CIFAR-10 command
        assert (simclr.temperature, simclr.key_augment, simclr.relabel) == (0.5, "strong", None)
        dcl = recipe(dataset, "dcl")  # DCL main.py; τ⁺ the class prior
        assert (dcl.temperature, dcl.projector_dims, dcl.projector_bn) == (0.5, (512, 128), True)
        nnclr = recipe(dataset, "nnclr")  # solo-learn scripts/pretrain/cifar/nnclr.yaml
        assert (nnclr.temperature, nnclr.queue_size, nnclr.predictor_hidden) == (0.2, 65536, 4096)
        assert nnclr.projector_dims == (2048, 256)
        msf = recipe(dataset, "msf")  # train_msf.py --topk 5, get_mlp sizes for ResNet-18
        assert (msf.num_neighbors, msf.momentum, msf.key_augment) == (5, 0.99, "weak")
        assert (msf.projector_dims, msf.predictor_hidden) == ((1024, 128), 1024)
        assert msf.queue_size == 4096
        co2 = recipe(dataset, "co2")  # Co2 paper, MoCo v2 + Co2
        assert (co2.consistency_weight, co2.consistency_temperature) == (0.3, 0.04)
        # The protocol shared with ASCL and MoCo: the base file's optimiser and length.
        for config in (simclr, dcl, nnclr, msf, co2, recipe(dataset, "moco_dcl")):
            assert (config.optimizer, config.learning_rate, config.batch_size) == ("sgd", 0.03, 256)
            assert (config.epochs, config.weight_decay, config.backbone) == (200, 5e-4, "resnet18")
    for dataset, prior in {**DCL_PRIORS, "imagenet": 0.001}.items():
        assert recipe(dataset, "dcl").debias_prior == prior, dataset
        assert recipe(dataset, "moco_dcl").debias_prior == prior, dataset

    simclr = recipe("imagenet", "simclr")  # SimCLR paper, tf2/run.py
    assert (simclr.optimizer, simclr.batch_size, simclr.learning_rate) == ("lars", 4096, 0.3)
    assert (simclr.weight_decay, simclr.warmup_epochs, simclr.temperature) == (1e-6, 10, 0.1)
    nnclr = recipe("imagenet", "nnclr")  # NNCLR paper
    assert (nnclr.queue_size, nnclr.temperature, nnclr.predictor_hidden) == (98304, 0.1, 4096)
    assert nnclr.projector_dims == (2048, 256)
    msf = recipe("imagenet", "msf")  # train_msf.py and the MSF README's command
    assert (msf.queue_size, msf.num_neighbors, msf.momentum, msf.learning_rate) == (
        128000,
        5,
        0.99,
        0.05,
    )
    assert (msf.projector_dims, msf.predictor_hidden) == ((4096, 512), 4096)
    assert msf.key_augment == "weak"
    co2 = recipe("imagenet", "co2")  # MoCo v2 + Co2
    assert (co2.consistency_weight, co2.consistency_temperature) == (0.3, 0.04)
    assert (co2.temperature, co2.queue_size, co2.momentum) == (0.2, 65536, 0.999)


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
# The methods ASCL is measured against keep the ASCL code's optimiser, batch, length and
# backbone (ASCL_CODE) and take their own values from these sources.
SIMCLR_README = "google-research/simclr README, CIFAR-10 command"
IN_BATCH = {  # SimCLR, DCL and NNCLR: no momentum encoder, two strong views, global BN
    "norm": ("sync", "simclr tf2/run.py --global_bn True (one device: the batch)"),
    "key_augment": ("strong", "SimCLR, DCL utils.py, NNCLR: two strong views"),
    "symmetric": (True, "SimCLR, DCL, NNCLR: the loss over both views"),
    "projector_bn": (True, "simclr tf2/model.py, DCL model.py, solo-learn nnclr.py"),
}
NNCLR_CONFIG = "solo-learn scripts/pretrain/cifar/nnclr.yaml"
MSF_CODE = "UMBCvision/MSF train_msf.py"
METHOD_SOURCES |= {
    "simclr": {
        **IN_BATCH,
        "method": ("simclr", "SimCLR paper"),
        "relabel": (None, "plain SimCLR (--relabel=ascl is the plug-in)"),
        "temperature": (0.5, f"{SIMCLR_README} --temperature=0.5"),
        "projector_dims": ((512, 128), "simclr tf2/model.py ProjectionHead, --proj_out_dim 128"),
    },
    "dcl": {
        **IN_BATCH,
        "method": ("dcl", "DCL main.py --debiased True"),
        "temperature": (0.5, "DCL main.py --temperature 0.5"),
        "projector_dims": ((512, 128), "DCL model.py g: 2048-512 (BN)-128"),
    },
    "nnclr": {
        **IN_BATCH,
        "method": ("nnclr", "NNCLR paper"),
        "temperature": (0.2, f"{NNCLR_CONFIG} temperature"),
        "queue_size": (65536, f"{NNCLR_CONFIG} queue_size"),
        "projector_dims": ((2048, 256), f"{NNCLR_CONFIG} proj_hidden_dim, proj_output_dim"),
        "predictor_hidden": (4096, f"{NNCLR_CONFIG} pred_hidden_dim"),
    },
    "msf": {
        "method": ("msf", MSF_CODE),
        "num_neighbors": (5, f"{MSF_CODE} --topk 5"),
        "queue_size": (4096, "tfascl: the ASCL code's memory (MSF's 128000: ImageNet's tenth)"),
        "projector_dims": ((1024, 128), f"{MSF_CODE} get_mlp(512, 2 x 512, 512 // 4)"),
        "projector_bn": (True, f"{MSF_CODE} get_mlp"),
        "predictor_hidden": (1024, f"{MSF_CODE} predictor hidden 2 x 512"),
        "key_augment": ("weak", f"{MSF_CODE} --weak_strong"),
        "momentum": (0.99, f"{MSF_CODE} --momentum 0.99"),
    },
    "co2": {
        "method": ("co2", "Co2 paper"),
        "relabel": (None, "plain Co2 (--relabel is the plug-in)"),
        "consistency_weight": (0.3, "Co2 paper α (MoCo v2 + Co2)"),
        "consistency_temperature": (0.04, "Co2 paper τ_con"),
        "key_augment": ("weak", "the ASCL code's MoCo, which Co2 extends here"),
    },
    "moco_dcl": {
        "method": ("moco_dcl", "MoCo v2 with DCL's loss"),
        # Not MoCo's 0.1: there the debiased estimate sits at its clamp and the features collapse.
        "temperature": (0.5, "DCL main.py --temperature 0.5"),
        "key_augment": ("weak", "the ASCL code's MoCo, which DCL's loss replaces here"),
    },
}
# τ⁺ of DCL is the class prior (DCL main.py --tau_plus 0.1 on 10 classes): 1/classes.
DCL_PRIORS = {"cifar10": 0.1, "cifar100": 0.01, "stl10": 0.1, "tinyimagenet": 0.005}
OVERRIDES = {
    ("cifar100", "ascl"): {"num_neighbors": (5, "ASCL README: the CIFAR-100 example runs --K 5")},
    **{
        (d, "ressl"): {
            "queue_size": (16384, "ReSSL paper: STL-10 and Tiny ImageNet memory"),
            "momentum": (0.996, "ReSSL paper: STL-10 and Tiny ImageNet momentum"),
        }
        for d in ("stl10", "tinyimagenet")
    },
    **{
        (d, m): {"debias_prior": (prior, f"DCL main.py --tau_plus, the class prior: {prior:g}")}
        for d, prior in DCL_PRIORS.items()
        for m in ("dcl", "moco_dcl")
    },
}
MOCO_V2 = "MoCo v2 main_moco.py"
IMAGENET_SOURCES = {  # every ImageNet recipe
    "dataset": ("imagenet2012", "TFDS ImageNet-1k"),
    "input": ("stream", "tfascl: 1.28 M images streamed"),
    "eval_crop": (0.875, "Resize(256) + CenterCrop(224); SimCLR CROP_PROPORTION"),
    "backbone": ("resnet50", MOCO_V2),
    "backbone_width": (64, "torchvision resnet50"),
    "stem": ("imagenet", "torchvision resnet50"),
    "image_size": (224, f"{MOCO_V2} RandomResizedCrop(224)"),
    "epochs": (200, "MoCo v2 / ASCL paper: the ImageNet comparison's length"),
    "knn_every": (0, "tfascl: kNN at the end only"),
}
MOCO_V2_RECIPE = {  # MoCo v2, ASCL, Co2 and MoCo+DCL
    "projector_dims": ((2048, 128), f"{MOCO_V2} --mlp --moco-dim 128"),
    "projector_bn": (False, f"{MOCO_V2} --mlp"),
    "norm": (None, f"{MOCO_V2}: shuffle BN across GPUs (tfascl's default on several replicas)"),
    "batch_size": (256, f"{MOCO_V2} --batch-size 256"),
    "optimizer": ("sgd", f"{MOCO_V2} SGD(momentum=0.9)"),
    "learning_rate": (0.03, f"{MOCO_V2} --lr 0.03"),
    "scale_lr": (True, "MoCo README: linear lr scaling"),
    "weight_decay": (1e-4, f"{MOCO_V2} --wd 1e-4"),
    "exclude_bn_bias": (False, f"{MOCO_V2} SGD(model.parameters())"),
    "warmup_epochs": (0, f"{MOCO_V2}: no warm-up"),
    "queue_size": (65536, f"{MOCO_V2} --moco-k 65536"),
    "momentum": (0.999, f"{MOCO_V2} --moco-m 0.999"),
    "symmetric": (False, f"{MOCO_V2}: one direction"),
}
# The MoCo v2 pipeline the ImageNet recipes on MoCo run (the ASCL README, 65-66, runs its
# builder.py in the MoCo code): aug+ on both views, the cosine stepped per epoch.
MOCO_V2_PIPELINE = {
    "key_augment": ("strong", f"{MOCO_V2} 247-249 TwoCropsTransform(aug+)"),
    "schedule": ("cosine", f"{MOCO_V2} --cos"),
    "schedule_per": ("epoch", f"{MOCO_V2} 263, 372-376 adjust_learning_rate per epoch"),
    "eval_crop": (0.875, "MoCo main_lincls.py 268-269 Resize(256) + CenterCrop(224)"),
}
SIMCLR_RUN = "google-research/simclr tf2/run.py"
LARS_RECIPE = {  # SimCLR (and DCL on it) and NNCLR: LARS at batch 4096, global BN
    "norm": ("sync", f"{SIMCLR_RUN} --global_bn True"),
    "projector_bn": (True, "simclr tf2/model.py; NNCLR paper"),
    "batch_size": (4096, "SimCLR and NNCLR papers"),
    "optimizer": ("lars", f"{SIMCLR_RUN} --optimizer lars; NNCLR paper"),
    "learning_rate": (0.3, f"{SIMCLR_RUN} --learning_rate 0.3; NNCLR paper base lr"),
    "scale_lr": (True, f"{SIMCLR_RUN} --learning_rate_scaling linear"),
    "weight_decay": (1e-6, "tf2/run.py --weight_decay 1e-6; NNCLR paper"),
    "exclude_bn_bias": (True, "simclr tf2/model.py LARS exclude_from_weight_decay"),
    "warmup_epochs": (10, f"{SIMCLR_RUN} --warmup_epochs 10; NNCLR paper"),
    "key_augment": ("strong", "SimCLR, NNCLR: two strong views"),
    "symmetric": (True, "SimCLR, NNCLR: the loss over both views"),
}
SIMCLR_HEAD = {"projector_dims": ((2048, 128), "SimCLR paper: head 2048-2048-128")}
IMAGENET_METHODS = {
    "moco": {
        **MOCO_V2_RECIPE,
        "method": ("moco", MOCO_V2),
        "temperature": (0.2, f"{MOCO_V2} --moco-t 0.2"),
        **MOCO_V2_PIPELINE,
    },
    "ascl": {
        **MOCO_V2_RECIPE,
        **MOCO_V2_PIPELINE,
        "method": ("ascl", "ASCL paper, ImageNet-1k"),
        "temperature": (0.1, "ASCL ImageNet-1K/builder.py T1=0.1"),
        "relabel_temperature": (0.05, "ASCL ImageNet-1K/builder.py T2=0.05"),
        "num_neighbors": (1, "ASCL ImageNet-1K/builder.py nn_num = 1"),
    },
    "co2": {
        **MOCO_V2_RECIPE,
        "method": ("co2", "Co2 paper: MoCo v2 + Co2"),
        "temperature": (0.2, f"{MOCO_V2} --moco-t 0.2"),
        "consistency_weight": (0.3, "Co2 paper α"),
        "consistency_temperature": (0.04, "Co2 paper τ_con"),
        **MOCO_V2_PIPELINE,
    },
    "moco_dcl": {
        **MOCO_V2_RECIPE,
        "method": ("moco_dcl", "MoCo v2 with DCL's loss"),
        "temperature": (0.2, f"{MOCO_V2} --moco-t 0.2"),
        "debias_prior": (0.001, "DCL main.py --tau_plus, the prior of 1,000 classes"),
        **MOCO_V2_PIPELINE,
    },
    "simclr": {
        **LARS_RECIPE,
        **SIMCLR_HEAD,
        "method": ("simclr", "SimCLR paper"),
        "temperature": (0.1, f"{SIMCLR_RUN} --temperature 0.1"),
    },
    "dcl": {
        **LARS_RECIPE,
        **SIMCLR_HEAD,
        "method": ("dcl", "DCL on SimCLR's ImageNet recipe"),
        "temperature": (0.1, f"{SIMCLR_RUN} --temperature 0.1"),
        "debias_prior": (0.001, "DCL main.py --tau_plus, the prior of 1,000 classes"),
    },
    "nnclr": {
        **LARS_RECIPE,
        "method": ("nnclr", "NNCLR paper"),
        "temperature": (0.1, "NNCLR paper τ"),
        "queue_size": (98304, "NNCLR paper support set"),
        "projector_dims": ((2048, 256), "NNCLR paper projection MLP"),
        "predictor_hidden": (4096, "NNCLR paper prediction MLP"),
    },
    "msf": {
        "method": ("msf", MSF_CODE),
        "norm": (None, f"{MSF_CODE} get_shuffle_ids (tfascl's shuffle on several replicas)"),
        "projector_dims": ((4096, 512), f"{MSF_CODE} get_mlp(2048, 4096, 512)"),
        "projector_bn": (True, f"{MSF_CODE} get_mlp"),
        "predictor_hidden": (4096, f"{MSF_CODE} predictor hidden 2 x 2048"),
        "batch_size": (256, f"{MSF_CODE} --batch_size 256"),
        "optimizer": ("sgd", f"{MSF_CODE} SGD(momentum=0.9)"),
        "learning_rate": (0.05, "MSF README --learning_rate 0.05"),
        "scale_lr": (False, f"{MSF_CODE}: no scaling"),
        "weight_decay": (1e-4, f"{MSF_CODE} --weight_decay 1e-4"),
        "exclude_bn_bias": (False, f"{MSF_CODE} SGD(params)"),
        "warmup_epochs": (0, "MSF util.py adjust_learning_rate"),
        "queue_size": (128000, "MSF README --mem_bank_size 128000"),
        "num_neighbors": (5, f"{MSF_CODE} --topk 5"),
        "momentum": (0.99, "MSF README --momentum 0.99"),
        "momentum_schedule": ("constant", f"{MSF_CODE} _momentum_update_target_encoder"),
        "key_augment": ("weak", "MSF README --weak_strong"),
        "symmetric": (False, f"{MSF_CODE}: one direction"),
    },
}
assert set(IMAGENET_METHODS) == set(IMAGENET_RECIPES)


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
    # The tables name flags; a field's flag may have another name (--relabel_temperature).
    fields = {flag_name(f.name): f.name for f in dataclasses.fields(train_config.TrainConfig)}
    for name, (value, source) in expected_values(path.stem).items():
        got = getattr(config, fields[name])
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
            # ReSSL's code for small datasets is not in its repository (a separate download,
            # README.md 10-11): the file must say whose values the optimiser and head are.
            outside = "not public" in text or "distributed separately" in text
            assert outside and "Carried over from the ASCL code" in text, path.name
            assert "ReSSL's ImageNet code" in text, path.name
        if path.stem.endswith("_sce"):
            assert "resnet18_cifar10.yaml" in text and "projector_resnet18_mlp2_bn1.yaml" in text
            assert "shuffle_momentum_base.py" in text, path.name
            if not path.stem.startswith("cifar10_"):
                assert "publishes no" in text and "carried over" in text, path.name
        dataset, method = path.stem.split("_", 1)
        if method not in COMPARED_METHODS:
            continue
        if dataset != "imagenet":
            # The shared protocol is kept, and the method's own optimiser named beside it.
            assert "Protocol (as for every method compared here)" in text, path.name
        if method in ("nnclr", "co2"):
            assert "No official code was released" in text or "no official" in text, path.name
        if method == "simclr" and dataset not in ("cifar10", "imagenet"):
            assert "SimCLR published no" in text and "carried over" in text, path.name
        if method == "nnclr" and dataset in ("stl10", "tinyimagenet"):
            assert "publishes no" in text and "carried over" in text, path.name
        # A value no source gives for this data (MSF's bank, τ⁺ from the class count).
        derived_prior = method in ("dcl", "moco_dcl") and dataset not in ("cifar10", "stl10")
        if derived_prior or (method == "msf" and dataset != "imagenet"):
            assert "# tfascl: " in text, path.name


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

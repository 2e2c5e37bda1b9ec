"""The choices the command line offers, as plain names: importing this starts no TensorFlow.

``tfascl-train`` defines its flags (and answers ``--help`` or a bad value) from these before
TensorFlow loads. The augmentation, pipeline, optimizer and strategy modules, the momentum
models (``MOMENTUM_SCHEDULES``) and tfascl-eval's ``--input`` import their names from here,
so each is written once; the model names mirror ``tfascl.models`` (``METHODS``,
``RESNETS``, ``STEMS``, ``NORMS``, ``KEY_NORMS``, ``default_stem``), and
``tests/test_cli.py`` checks that they agree. A method added to the registry goes into
``METHOD_NAMES`` too.
"""

from __future__ import annotations

# tfascl.models.registry.METHODS, in its order.
METHOD_NAMES = (
    "moco", "ascl", "ahcl", "hard", "sce", "ressl", "co2", "moco_dcl", "byol", "byol_ascl",
    "simclr", "dcl", "nnclr", "msf",
)  # fmt: skip
# tfascl.models.backbones.RESNETS and STEMS; tfascl.models.batchnorm.NORMS and KEY_NORMS.
RESNET_NAMES = ("resnet18", "resnet34", "resnet50")
STEMS = ("cifar", "cifar_pool", "imagenet")
NORMS = ("split", "batch", "sync", "shuffle")
KEY_NORMS = ("split", "batch", "sync")
# tfascl.optim.build_optimizer's names.
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "lars", "adamw", "lamb")
# tfascl.data: the key view, where augmentation runs, how the input is read.
KEY_AUGMENTS = ("weak", "strong")
AUGMENT_ON = ("host", "device")
INPUT_MODES = ("auto", "memory", "stream")  # tfascl-train's and tfascl-eval's --input
# tfascl.models.base.MomentumModel's EMA schedules.
MOMENTUM_SCHEDULES = ("constant", "cosine")
# tfascl.distribute.make_strategy's names.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# tfascl.distribute: how a multi-worker run finds its workers; a SLURM node's first port.
CLUSTERS = ("auto", "tf_config", "slurm")
SLURM_PORT = 8888


def default_stem(image_size: int) -> str:
    """The reference code's stem for an image size: CIFAR ≤ 32 px, pooled ≤ 96, else ImageNet
    (``tfascl.models.backbones.default_stem``)."""
    if image_size <= 32:
        return "cifar"
    if image_size <= 96:
        return "cifar_pool"
    return "imagenet"

"""Backbones, heads and the self-supervised models."""

from tfascl.models.backbones import resnet
from tfascl.models.base import EncoderModel, MomentumModel
from tfascl.models.batchnorm import SplitBatchNorm, norm_factory
from tfascl.models.byol import BYOL
from tfascl.models.contrastive import MomentumContrast
from tfascl.models.ema import cosine_momentum, ema_update
from tfascl.models.heads import mlp_head
from tfascl.models.meanshift import MeanShift
from tfascl.models.queue import KeyQueue
from tfascl.models.registry import (
    METHODS,
    MethodSpec,
    build_backbone,
    build_model,
    method_label,
    method_name,
)
from tfascl.models.simclr import NNCLR, SimCLR

__all__ = [
    "BYOL",
    "METHODS",
    "NNCLR",
    "EncoderModel",
    "KeyQueue",
    "MeanShift",
    "MethodSpec",
    "MomentumContrast",
    "MomentumModel",
    "SimCLR",
    "SplitBatchNorm",
    "build_backbone",
    "build_model",
    "cosine_momentum",
    "ema_update",
    "method_label",
    "method_name",
    "mlp_head",
    "norm_factory",
    "resnet",
]

"""A run on disk: what defines its model, and how to get the model back.

``model_dir/run.json`` holds a ``RunSpec`` (everything needed to rebuild the
model, plus the data statistics it was trained with); ``model_dir/checkpoints/``
holds ``tf.train.Checkpoint`` s of ``model.checkpoint()``. Training, evaluation
and export all go through this module, so they agree on the layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfascl.models.registry import METHODS, build_backbone, build_model

SPEC_FILE = "run.json"
CHECKPOINT_SUBDIR = "checkpoints"
BEST_FILE = "best_checkpoint.txt"


@dataclasses.dataclass
class RunSpec:
    """The model-defining settings of a run (not the optimizer or the schedule).

    ``target_temperature``/``momentum_schedule`` of ``None`` take the method's
    defaults (see ``tfascl.models.METHODS``); ``key_norm`` of ``None`` gives the
    momentum backbone the same normalisation as the online one (``norm``).
    """

    method: str = "ascl"
    backbone: str = "resnet18"
    backbone_width: int = 64
    image_size: int = 32
    stem: str | None = None
    norm: str = "split"
    key_norm: str | None = None
    num_splits: int = 8
    projector_dims: tuple[int, int] = (2048, 128)
    projector_bn: bool | None = None
    queue_size: int = 4096
    temperature: float = 0.1
    target_temperature: float | None = None
    num_neighbors: int = 1
    sce_lambda: float = 0.5
    symmetric: bool = False
    momentum: float = 0.99
    momentum_schedule: str | None = None
    total_steps: int | None = None
    batch_size: int | None = None
    dataset: str = "digits"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_classes: int | None = None

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model`` for this method."""
        model_class = METHODS[self.method][0].__name__
        options: dict[str, Any] = {"momentum": self.momentum, "total_steps": self.total_steps}
        if self.momentum_schedule is not None:
            options["momentum_schedule"] = self.momentum_schedule
        if self.target_temperature is not None:
            options["target_temperature"] = self.target_temperature
        if self.method in ("ascl", "ahcl", "hard", "byol_ascl"):
            options["num_neighbors"] = self.num_neighbors
        if model_class == "MomentumContrast":
            options.update(
                queue_size=self.queue_size,
                temperature=self.temperature,
                sce_lambda=self.sce_lambda,
                batch_size=self.batch_size,
                symmetric=self.symmetric,
                # Shuffle BN: across replicas ("shuffle"), or inside the batch for
                # split BN; it does nothing for BN over the whole (synced) batch.
                shuffle_keys=self.norm in ("split", "shuffle") or self.key_norm == "split",
            )
        else:
            options["symmetric"] = self.symmetric
        return options

    def build_backbone(self, norm: str | None = None) -> keras.Model:
        """The online backbone, or with ``norm`` another one of the same architecture."""
        return build_backbone(
            self.backbone,
            self.image_size,
            self.backbone_width,
            stem=self.stem,
            norm=norm or self.norm,
            num_splits=self.num_splits,
        )

    def build_model(self, **overrides: Any) -> keras.Model:
        """The uncompiled model; ``overrides`` go to the model class (e.g. ``views``)."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.key_norm is not None and self.key_norm != self.norm:
            # e.g. SCE's CIFAR config: split BN in the momentum trunk only.
            overrides = {"key_backbone": self.build_backbone(self.key_norm), **overrides}
        return build_model(
            self.method,
            self.build_backbone(),
            projector_dims=tuple(self.projector_dims),
            projector_bn=self.projector_bn,
            norm=self.norm,
            num_splits=self.num_splits,
            **{**self.model_options(), **overrides},
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunSpec fields {unknown}")
        values = dict(values)
        for name in ("projector_dims", "mean", "std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def save_spec(spec: RunSpec, model_dir: str | Path) -> Path:
    """Writes ``model_dir/run.json`` and returns its path."""
    path = Path(model_dir) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_json() + "\n")
    return path


def load_spec(model_dir: str | Path) -> RunSpec:
    """Reads ``model_dir/run.json``; a clear error if it is not a tfascl run."""
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a tfascl model_dir: no {SPEC_FILE} in it")
    return RunSpec.from_dict(json.loads(path.read_text()))


def checkpoint_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / CHECKPOINT_SUBDIR


def find_checkpoint(model_dir: str | Path, which: str = "latest") -> str:
    """The checkpoint prefix of ``which``: ``"latest"``, ``"best"`` or a name/path.

    Raises:
        FileNotFoundError: one line naming the directory, when there is none.
    """
    directory = checkpoint_dir(model_dir)
    if which == "latest":
        path = tf.train.latest_checkpoint(str(directory))
    elif which == "best":
        best = Path(model_dir) / BEST_FILE
        path = str(directory / best.read_text().strip()) if best.is_file() else None
    else:
        candidate = Path(which) if Path(which).is_absolute() else directory / which
        path = str(candidate) if tf.io.gfile.exists(f"{candidate}.index") else None
    if not path:
        raise FileNotFoundError(f"no {which!r} checkpoint in {directory}")
    return path


def restore_model(model_dir: str | Path, which: str = "latest") -> tuple[keras.Model, RunSpec, str]:
    """Rebuilds a run's model and loads its weights (encoders and queue; not the optimizer).

    Returns:
        ``(model, spec, checkpoint_path)``.

    Raises:
        ValueError: one line, when the checkpoint lacks weights of this model (e.g. it
            was written by another program), rather than going on with random ones.
    """
    spec = load_spec(model_dir)
    path = find_checkpoint(model_dir, which)
    model = spec.build_model()
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial()  # the optimizer's slots are not wanted here
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        summary = str(error).split(",")[0]
        raise ValueError(f"{path} does not hold this run's model ({summary})") from None
    return model, spec, path

"""The knobs of the contrastive views (`AugmentRecipe`), as plain values: no TensorFlow.

`tfascl.data.augment` applies them; `tfascl-train` builds one from its flags before
TensorFlow starts. The default is the ASCL / MoCo v2 CIFAR recipe.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROB = 0.5
JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_PROB = 0.8
GRAY_PROB = 0.2
BLUR_PROB = 0.5
BLUR_SIGMA = (0.1, 2.0)


@dataclasses.dataclass(frozen=True)
class AugmentRecipe:
    """The knobs of the strong and weak views, as plain values (torchvision semantics).

    The default is the ASCL / MoCo v2 CIFAR recipe (``tfascl.data.augment``'s doc). The
    weak (key) view uses `crop_scale`, `crop_ratio` and `flip_prob`; the strong view all.

    Attributes:
        crop_scale: RandomResizedCrop's range of the crop area over the image area.
        crop_ratio: RandomResizedCrop's range of the crop aspect ratio (width / height).
        flip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of ColorJitter(`jitter_strength`).
        jitter_strength: Brightness, contrast, saturation and hue strengths.
        gray_prob: Probability of converting to grayscale.
        blur_prob: Probability of a Gaussian blur with sigma uniform in `blur_sigma`.
        blur_sigma: Range of the blur's sigma, in pixels.
    """

    crop_scale: tuple[float, float] = CROP_SCALE
    crop_ratio: tuple[float, float] = CROP_RATIO
    flip_prob: float = FLIP_PROB
    jitter_prob: float = JITTER_PROB
    jitter_strength: tuple[float, float, float, float] = JITTER_STRENGTH
    gray_prob: float = GRAY_PROB
    blur_prob: float = BLUR_PROB
    blur_sigma: tuple[float, float] = BLUR_SIGMA

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "jitter_strength", "blur_sigma"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("flip_prob", "jitter_prob", "gray_prob", "blur_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if not 0.0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 <= low <= high, got {self.blur_sigma}")

    def to_config(self) -> dict[str, Any]:
        """The fields as JSON-friendly lists and floats (a Keras layer's config)."""
        fields = dataclasses.asdict(self).items()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields}

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> AugmentRecipe:
        return cls(**(config or {}))

    def describe(self) -> str:
        """One line for a run's start: what the views do."""
        parts = [f"crop scale {self.crop_scale[0]:g}-{self.crop_scale[1]:g}"]
        parts.append(f"flip p={self.flip_prob:g}" if self.flip_prob else "no flip")
        parts.append(f"colour jitter p={self.jitter_prob:g}" if self.jitter_prob else "no jitter")
        if self.gray_prob:
            parts.append(f"grayscale p={self.gray_prob:g}")
        parts.append(f"blur p={self.blur_prob:g}" if self.blur_prob else "no blur")
        return ", ".join(parts)


STANDARD_RECIPE = AugmentRecipe()

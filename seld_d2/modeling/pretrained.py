"""Pretrained weights for ``SeldRCNN``: torchvision ResNet and Detectron2 model-zoo checkpoints.

Detectron2 keeps its ``convert-torchvision-to-d2.py`` outside the pip package, so this module
does the conversions ``tools/convert_weights.py`` writes to disk:

- :func:`torchvision_resnet_to_d2`: a torchvision ResNet state dict (ImageNet; RGB input
  normalised with the ImageNet mean/std, stride in the 3x3 conv) -> Detectron2 names under
  ``backbone.bottom_up.`` (``conv1``/``bn1`` -> the ``DualModalityStem``'s RGB ``stem.conv1`` and
  its norm). Needs ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (the project's default).
- :func:`model_zoo_to_seld`: a Detectron2 model-zoo R-CNN (BGR input, mean subtracted, std 1,
  MSRA ResNet with the stride in the 1x1 conv) -> the same names, its stem conv1 re-ordered to
  RGB and scaled by the ImageNet std so that it sees the project's input exactly. Needs
  ``MODEL.RESNETS.STRIDE_IN_1X1: True``.
- :func:`match_to_model`: which converted tensors load into a model, which do not (absent from
  it, or of another shape: e.g. the 81-class COCO predictor) and which of the model's tensors
  keep their initialisation.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils.io import atomic_open

# RGB order, 0-255 scale: the project's PIXEL_MEAN / PIXEL_STD (ImageNet statistics x 255).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
STEM_CONV = "backbone.bottom_up.stem.conv1.weight"
# Config each source needs (its ResNet variant); tools/convert_weights.py checks it.
REQUIRED_CONFIG = {
    "torchvision": {"MODEL.RESNETS.STRIDE_IN_1X1": False},
    "model-zoo": {"MODEL.RESNETS.STRIDE_IN_1X1": True},
}


def torchvision_resnet_to_d2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet's tensors to the Detectron2 names ``SeldRCNN`` uses.

    ``conv1``/``bn1`` -> ``backbone.bottom_up.stem.conv1`` / ``.conv1.norm``; ``layerN.i`` ->
    ``backbone.bottom_up.res{N+1}.i`` with ``bnK`` -> ``convK.norm`` and ``downsample.0/1`` ->
    ``shortcut`` / ``shortcut.norm``; other tensors (``fc.*``) keep their names (and then do not
    load). Values are unchanged (float32 tensors).
    """
    out = {}
    for name, value in state_dict.items():
        new = name
        if new.startswith(("conv1.", "bn1.")):
            new = "stem." + new
        new = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", new)
        new = re.sub(r"\bbn(\d)\b", r"conv\1.norm", new)
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        if new.startswith(("stem.", "res")):
            new = "backbone.bottom_up." + new
        out[new] = torch.as_tensor(value)
    return out


def model_zoo_to_seld(
    model: Mapping[str, np.ndarray | torch.Tensor],
    source_std_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """A Detectron2 model-zoo state dict (names already Detectron2's) for ``SeldRCNN``'s input.

    The zoo's R-CNNs take BGR minus the ImageNet mean with std ``source_std_bgr`` (1 for the
    MSRA ResNets); ``SeldRCNN`` takes RGB normalised by :data:`IMAGENET_STD_RGB`. With the same
    mean, ``conv1_rgb[:, c] = conv1_bgr[:, 2 - c] * std_rgb[c] / source_std_rgb[c]`` gives the
    same stem response (zero padding included: both pad with the mean colour). ``pixel_mean``
    and ``pixel_std`` are dropped.
    """
    out = {
        k: torch.as_tensor(np.asarray(v)) for k, v in model.items() if k not in ("pixel_mean", "pixel_std")
    }
    if STEM_CONV not in out:
        raise KeyError(STEM_CONV)
    w = out[STEM_CONV].flip(1)  # BGR -> RGB input channels
    scale = torch.tensor(IMAGENET_STD_RGB, dtype=w.dtype) / torch.tensor(source_std_bgr[::-1], dtype=w.dtype)
    out[STEM_CONV] = w * scale[None, :, None, None]
    return out


@dataclass
class LoadReport:
    """What loading converted weights into a model does (names sorted)."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def skipped(self) -> list[str]:
        """Converted tensors that do not load: absent from the model or of another shape."""
        return sorted([*self.unexpected, *self.shape_mismatch])


def match_to_model(weights: Mapping[str, torch.Tensor], model: nn.Module) -> LoadReport:
    """Compare converted weights with a model's state dict (as ``DetectionCheckpointer`` loads:
    exact names, tensors of another shape skipped). ``initialised``: the model's tensors no
    converted tensor loads into, which keep their initialisation."""
    target = model.state_dict()
    report = LoadReport()
    for name in sorted(weights):
        if name not in target:
            report.unexpected.append(name)
        elif tuple(weights[name].shape) != tuple(target[name].shape):
            report.shape_mismatch[name] = (tuple(weights[name].shape), tuple(target[name].shape))
        else:
            report.loaded.append(name)
    loaded = set(report.loaded)
    report.initialised = sorted(k for k in target if k not in loaded)
    return report


def group_names(names: list[str]) -> list[tuple[str, int]]:
    """Names grouped by module for a readable listing: ``[(prefix, count)]`` in first-seen
    order; the prefix is the first two dotted parts (three under ``backbone.bottom_up``, four in
    its stem), and BN step counters are one ``*.num_batches_tracked`` group."""
    groups: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        depth = 2
        if name.startswith("backbone.bottom_up."):
            depth = 4 if parts[2] == "stem" else 3
        if parts[-1] == "num_batches_tracked":
            prefix = "*.num_batches_tracked"
        else:
            prefix = ".".join(parts[:depth]) if len(parts) > depth else name
        groups[prefix] = groups.get(prefix, 0) + 1
    return list(groups.items())


def read_pretrained(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a pretrained checkpoint and convert it: ``("torchvision" | "model-zoo", weights)``.

    A ``.pkl`` holding ``{"model": {name: array}}`` with Detectron2 names is a model-zoo file; a
    torch file (optionally wrapped in ``state_dict`` / ``model``) with ``conv1.weight`` and
    ``layer1.0.conv1.weight`` is a torchvision ResNet. Anything else raises one ``ValueError``
    line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: cannot be read as a checkpoint ({first})") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict) and STEM_CONV in data["model"]:
        return "model-zoo", model_zoo_to_seld(data["model"])
    sd = data
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if isinstance(sd, dict) and "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        return "torchvision", torchvision_resnet_to_d2(sd)
    keys = ", ".join(sorted(map(str, sd))[:5]) if isinstance(sd, dict) else type(sd).__name__
    raise ValueError(
        f"{path}: neither a torchvision ResNet state dict (conv1.weight, layer1.0.conv1.weight, ...) "
        f"nor a Detectron2 model-zoo .pkl ({{'model': {{'{STEM_CONV}': ...}}}}); found: {keys}"
    )


def write_weights(path: str | os.PathLike, weights: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights for ``MODEL.WEIGHTS`` (exact names, no matching heuristics): ``.pkl`` as
    Detectron2's model zoo does (numpy arrays), anything else with ``torch.save``."""
    state: dict[str, Any] = {"__author__": "seld_d2 tools/convert_weights.py", "matching_heuristics": False}
    state.update(meta)
    with atomic_open(Path(path), "wb") as f:
        if str(path).endswith(".pkl"):
            state["model"] = {k: v.detach().cpu().numpy() for k, v in weights.items()}
            pickle.dump(state, f)
        else:
            state["model"] = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
            torch.save(state, f)


__all__ = [
    "read_pretrained",
    "write_weights",
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "REQUIRED_CONFIG",
    "LoadReport",
    "group_names",
    "match_to_model",
    "model_zoo_to_seld",
    "torchvision_resnet_to_d2",
]

"""LPIPS (Zhang et al. 2018), AlexNet variant v0.1, in plain torch, with weights the user supplies.

No installable package ships these weights for offline use (``lpips`` fetches its AlexNet backbone
through torchvision), so ``LPIPS.from_file`` reads them from what the user has:

- one state dict holding the backbone and the linear heads, e.g. ``lpips.LPIPS(net="alex")``'s
  own ``state_dict()``, or a torchvision AlexNet state dict with the heads added; or
- two files: ``backbone=`` (torchvision's ``alexnet`` weights, or ``lpips``' ``net.slice*`` keys)
  and ``heads=`` (``lpips``' ``weights/v0.1/alex.pth``).

Key layouts read (AlexNet conv i is torchvision's ``features.{0, 3, 6, 8, 10}[i]``):

    backbone  net.slice{i+1}.{j}.weight / .bias    (lpips: slice i+1 holds features[j])
              features.{j}.weight / .bias          (torchvision alexnet)
    heads     lin{i}.model.1.weight  or  lins.{i}.model.1.weight   (1, C_i, 1, 1), C = 64 192 384 256 256

Any key may carry a leading ``module.`` (a DataParallel save). Other keys (torchvision's
classifier, lpips' constant ``scaling_layer`` buffers) are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuavatar.errors import ConfigError

__all__ = ["LPIPS", "AlexNetFeatures", "load_lpips", "ALEXNET_CONVS", "LPIPS_MIN_SIDE"]

# (torchvision features index, out channels, in channels, kernel, stride, padding) of AlexNet's convs
ALEXNET_CONVS = (
    (0, 64, 3, 11, 4, 2),
    (3, 192, 64, 5, 1, 2),
    (6, 384, 192, 3, 1, 1),
    (8, 256, 384, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
)
LPIPS_MIN_SIDE = 31
"""Smallest image side AlexNet's two max-pools leave a feature map for, in pixels."""

# v0.1's input normalisation, applied to images in [-1, 1] (lpips' ScalingLayer)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet().features`` up to the last ReLU, returning the five ReLU outputs.

    conv0 relu pool | conv3 relu pool | conv6 relu | conv8 relu | conv10 relu; pools are 3x3,
    stride 2. The final max-pool is left out: LPIPS does not read past relu5.
    """

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
                                   for _, c_out, c_in, k, s, p in ALEXNET_CONVS)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) -> the five (B, C_i, H_i, W_i) ReLU outputs, C = 64, 192, 384, 256, 256."""
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # the pools after relu1 and relu2
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats


class LPIPS(nn.Module):
    """Learned perceptual distance between images; 0 for identical ones, larger is more different.

    Build with ``LPIPS.from_file`` (or ``load_lpips``); a bare ``LPIPS()`` has random weights.
    Parameters are frozen; gradients still flow to the images, so it can serve as a loss.
    """

    def __init__(self):
        super().__init__()
        self.features = AlexNetFeatures()
        # lpips' NetLinLayer: a 1x1 conv to one channel, no bias, weights >= 0 (dropout unused in eval)
        self.heads = nn.ParameterList(nn.Parameter(torch.rand(1, c, 1, 1)) for _, c, *_ in ALEXNET_CONVS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, *, backbone: str | os.PathLike | None = None,
                  heads: str | os.PathLike | None = None) -> LPIPS:
        """Load weights from one state dict file (``path``) or two (``backbone`` and ``heads``).

        Raises:
            ConfigError: a file is missing or unreadable, or lacks the AlexNet / head tensors, or
                holds a tensor of the wrong shape or with non-finite or negative head weights.
        """
        pair = (backbone, heads)
        if (path is not None and pair != (None, None)) or (path is None and None in pair):
            raise ConfigError("LPIPS weights: give either one file (path) or both backbone= and heads= files")
        if path is not None:
            state = _read_state_dict(path)
            backbone_state, heads_state = state, state
            backbone_src = heads_src = str(path)
        else:
            backbone_state, heads_state = _read_state_dict(backbone), _read_state_dict(heads)
            backbone_src, heads_src = str(backbone), str(heads)
        model = cls()
        mapped = {**_map_backbone(backbone_state, backbone_src), **_map_heads(heads_state, heads_src)}
        model.load_state_dict(mapped, strict=True)  # every key and shape was checked above
        return model

    def forward(self, pred: Tensor,  # (B, H, W, 3)
                target: Tensor,  # (B, H, W, 3)
                ) -> Tensor:  # (B,)
        """(B,) LPIPS distance per image pair; images (B, H, W, 3) in [0, 1], sides >= ``LPIPS_MIN_SIDE``."""
        if pred.ndim != 4 or pred.shape[-1] != 3:
            raise ValueError(f"pred: expected images (B, H, W, 3), got shape {tuple(pred.shape)}")
        if target.shape != pred.shape:
            raise ValueError(f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
        if min(pred.shape[1:3]) < LPIPS_MIN_SIDE:
            raise ValueError(f"pred: LPIPS needs images of at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE} pixels, "
                             f"got {tuple(pred.shape[1:3])}")
        total = 0
        for layer, (f0, f1) in enumerate(zip(self._features(pred), self._features(target), strict=True)):
            diff = (_unit_channels(f0) - _unit_channels(f1)).square()  # (B, C_i, H_i, W_i)
            total = total + F.conv2d(diff, self.heads[layer]).mean((1, 2, 3))
        return total

    lpips = forward  # ``model.lpips(pred, target)`` reads better at call sites than ``model(...)``

    def _features(self, images: Tensor) -> list[Tensor]:
        x = images.to(self.shift.dtype).permute(0, 3, 1, 2) * 2 - 1  # [0, 1] -> [-1, 1], channels first
        return self.features((x - self.shift) / self.scale)


def load_lpips(path: str | os.PathLike | None, device: str | torch.device = "cpu") -> LPIPS | None:
    """``LPIPS.from_file(path)`` on ``device``, or None when no path is configured (None or "")."""
    if path is None or not str(path).strip():
        return None
    return LPIPS.from_file(path).to(device)


def _unit_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Scale each pixel's feature vector of (B, C, H, W) to unit length (lpips' normalize_tensor)."""
    return x / (x.square().sum(1, keepdim=True).sqrt() + eps)


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"LPIPS weights file {p} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        raise ConfigError(f"LPIPS weights file {p} cannot be read as a torch state dict "
                          f"(damaged, truncated or not a .pth file): {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"LPIPS weights file {p} holds a {type(state).__name__}, not a state dict of tensors "
                          "(save model.state_dict(), not the model)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _take(state: dict[str, Tensor], key: str, shape: tuple[int, ...], source: str) -> Tensor:
    t = state[key]
    if tuple(t.shape) != shape:
        raise ConfigError(f"LPIPS weights {source}: {key!r} has shape {tuple(t.shape)}, AlexNet LPIPS expects "
                          f"{shape} (is this the AlexNet variant, not VGG or SqueezeNet?)")
    if not t.is_floating_point() or not torch.isfinite(t).all():
        raise ConfigError(f"LPIPS weights {source}: {key!r} is not finite floating point (damaged file?)")
    return t.float()


def _map_backbone(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Our ``features.convs.{i}.*`` from the lpips (net.slice*) or torchvision (features.*) layout."""
    layouts = {
        "lpips": [f"net.slice{i + 1}.{j}" for i, (j, *_) in enumerate(ALEXNET_CONVS)],
        "torchvision": [f"features.{j}" for j, *_ in ALEXNET_CONVS],
    }
    found = {name: [p for p in prefixes if f"{p}.weight" in state] for name, prefixes in layouts.items()}
    name = max(found, key=lambda n: len(found[n]))
    if not found[name]:
        some = ", ".join(list(state)[:5]) or "none"
        raise ConfigError(f"LPIPS weights {source}: no AlexNet backbone; expected keys 'net.slice1.0.weight' ... "
                          f"(lpips package) or 'features.0.weight' ... (torchvision alexnet); found keys: {some}")
    out = {}
    for i, (prefix, (_, c_out, c_in, k, _, _)) in enumerate(zip(layouts[name], ALEXNET_CONVS, strict=True)):
        for part, shape in (("weight", (c_out, c_in, k, k)), ("bias", (c_out,))):
            key = f"{prefix}.{part}"
            if key not in state:
                raise ConfigError(f"LPIPS weights {source}: AlexNet backbone ({name} layout) is missing {key!r}")
            out[f"features.convs.{i}.{part}"] = _take(state, key, shape, source)
    return out


def _head_keys(i: int) -> tuple[str, ...]:
    # model.1 follows lpips' (parameterless) Dropout; model.0 is a head built with use_dropout=False
    return tuple(f"{m}.model.{j}.weight" for j in (1, 0) for m in (f"lin{i}", f"lins.{i}"))


def _map_heads(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Our ``heads.{i}`` from lpips' ``lin{i}.model.1.weight`` (or ``lins.{i}.``, or ``.model.0.``)."""
    out = {}
    for i, (_, c, *_) in enumerate(ALEXNET_CONVS):
        key = next((k for k in _head_keys(i) if k in state), None)
        if key is None:
            raise ConfigError(f"LPIPS weights {source}: missing the linear head 'lin{i}.model.1.weight' "
                              "(the heads are lpips' weights/v0.1/alex.pth; pass it as heads= if it is a separate file)")
        w = _take(state, key, (1, c, 1, 1), source)
        if (w < 0).any():
            raise ConfigError(f"LPIPS weights {source}: {key!r} has negative weights; trained LPIPS heads are "
                              "non-negative, so these are not LPIPS heads")
        out[f"heads.{i}"] = w
    return out

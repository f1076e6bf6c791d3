"""`BackboneFrameEncoder`: video (B, T, H, W, C) → per-frame features (B, T, F).

Resizes each frame to the backbone's input size and normalises it, then runs one of:

* `builtin` — actstream's small CNN (`models/backbone.py`, with the frame difference as
  motion input), trained from scratch;
* `hf:DIR` — a Hugging Face `AutoModel` saved in a local folder (`save_pretrained`), e.g. a
  ResNet, ConvNeXt or ViT; features are its pooled output;
* `timm:DIR` — a timm model saved in a local folder (config.json + weights), loaded through
  timm's `local-dir:` source with its classifier removed.

A plain folder is recognised by its config.json (`model_type`: Hugging Face; `architecture`:
timm). Nothing is ever downloaded: a name that is not a local folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import BackboneConfig, FrameBackbone, previous_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone that cannot be loaded; the message names it and says what to do."""


def backbone_kind(name: str) -> tuple[str, str]:
    """`backbone_name` → (kind, folder): kind is "builtin", "hf" or "timm"."""
    if name == "builtin":
        return "builtin", ""
    kind, _, folder = name.partition(":") if name.startswith(("hf:", "timm:")) else ("", "", name)
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"backbone {name!r}: not a local model folder with a config.json; actstream loads "
            "backbones from local folders only (save one with save_pretrained), or use 'builtin'"
        )
    if not kind:
        try:
            meta = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            raise BackboneError(f"backbone {name!r}: config.json is not readable JSON") from None
        if "model_type" in meta:
            kind = "hf"
        elif "architecture" in meta:
            kind = "timm"
        else:
            raise BackboneError(
                f"backbone {name!r}: config.json has neither model_type (Hugging Face) nor "
                "architecture (timm); name it hf:DIR or timm:DIR"
            )
    return kind, str(path)


def _hf_model(folder: str) -> tuple[nn.Module, int, tuple, tuple]:
    try:
        from transformers import AutoModel
    except ImportError:
        raise BackboneError(
            "Hugging Face backbones need transformers: pip install 'actstream[backbones]'"
        ) from None
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    cfg = model.config
    dim = getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = Path(folder) / "preprocessor_config.json"
    if pre.is_file():
        meta = json.loads(pre.read_text())
        mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
    return model, int(dim), mean, std


def _timm_model(folder: str) -> tuple[nn.Module, int, tuple, tuple]:
    try:
        import timm
    except ImportError:
        raise BackboneError("timm backbones need timm: pip install timm") from None
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    cfg = model.pretrained_cfg
    return (
        model,
        int(model.num_features),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )


class BackboneFrameEncoder(nn.Module):
    """Per-frame image backbone over videos.

    Args:
        backbone_name: "builtin", "hf:DIR", "timm:DIR" or a local model folder.
        image_size: frames are resized to image_size x image_size.
        builtin: the built-in CNN's settings (image_size is taken from the argument above).
    """

    def __init__(
        self,
        *,
        backbone_name: str = "builtin",
        image_size: int = 64,
        builtin: BackboneConfig | None = None,
    ) -> None:
        super().__init__()
        self.kind, folder = backbone_kind(backbone_name)
        self.image_size = image_size
        if self.kind == "builtin":
            cfg = builtin or BackboneConfig()
            self.net = FrameBackbone(
                BackboneConfig(
                    image_size=image_size,
                    channels=cfg.channels,
                    feature_dim=cfg.feature_dim,
                    motion_input=cfg.motion_input,
                )
            )
            self.feature_dim = cfg.feature_dim
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # FrameBackbone normalises itself
        else:
            self.net, self.feature_dim, mean, std = (
                _hf_model(folder) if self.kind == "hf" else _timm_model(folder)
            )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def images(self, video: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 or float in [0, 1] → (N, 3, S, S) float in [0, 1], resized."""
        x = video.permute(0, 3, 1, 2)
        x = x.float().div(255.0) if not x.is_floating_point() else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x

    def encode(self, images: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, S, S) frames (and each one's predecessor, for the built-in CNN) → (N, F)."""
        if self.kind == "builtin":
            return self.net(images, previous)
        x = (images - self.mean) / self.std
        if self.kind == "hf":
            out = self.net(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                pooled = out.last_hidden_state.mean(1)
            return pooled.flatten(1)
        return self.net(x)

    def forward(self, video: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Args: video (B, T, H, W, 3) uint8 or float in [0, 1]; valid (B, T) bool.
        Returns: (B, T, F)."""
        B, T = video.shape[:2]
        x = self.images(video.flatten(0, 1)).view(B, T, 3, self.image_size, self.image_size)
        prev = previous_frames(x, valid).flatten(0, 1) if self.kind == "builtin" else None
        return self.encode(x.flatten(0, 1), prev).view(B, T, -1)

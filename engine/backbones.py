"""Pretrained image backbones loaded from local folders (models/ never reads files):
`load_backbone(name)` → `ExternalBackbone`, the loader of `models.frame_encoder`, for the
detector's model (`build_action_model`) and FastBack over clips alike.

* `hf:DIR` — a Hugging Face `AutoModel` saved with `save_pretrained` (ResNet, ConvNeXt, ViT,
  ...); features are its pooled output; normalisation from DIR/preprocessor_config.json when
  present, else ImageNet's;
* `timm:DIR` — a timm model saved in a folder (config.json + weights), loaded through timm's
  `local-dir:` source with its classifier removed.

A plain folder is recognised by its config.json (`model_type`: Hugging Face; `architecture`:
timm). Nothing is ever downloaded: a name that is not a local folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.action_model import ActionModel, ModelConfig, build_model
from models.frame_encoder import ExternalBackbone

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
            f"backbone {name!r}: not a local model folder with a config.json; actstream never "
            "downloads: download it first (e.g. huggingface-cli download NAME --local-dir DIR, "
            "or save_pretrained) and pass hf:DIR, or use 'builtin'"
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


def _hf_model(folder: str) -> ExternalBackbone:
    try:
        from transformers import AutoModel
    except ImportError:
        raise BackboneError(
            "Hugging Face backbones need transformers: pip install 'actstream[backbones]'"
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # not a long task: no bars on the detector's stderr
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    cfg = model.config
    dim = getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = Path(folder) / "preprocessor_config.json"
    if pre.is_file():
        meta = json.loads(pre.read_text())
        mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
    return ExternalBackbone("hf", model, int(dim), mean, std)


def _timm_model(folder: str) -> ExternalBackbone:
    try:
        import timm
    except ImportError:
        raise BackboneError("timm backbones need timm: pip install timm") from None
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    cfg = model.pretrained_cfg
    return ExternalBackbone(
        "timm",
        model,
        int(model.num_features),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )


def load_backbone(name: str) -> ExternalBackbone:
    """The backbone a `backbone_name` other than "builtin" names; `BackboneError` if none."""
    kind, folder = backbone_kind(name)
    if kind == "builtin":
        raise BackboneError("the built-in backbone is built by models/, not loaded")
    try:
        return _hf_model(folder) if kind == "hf" else _timm_model(folder)
    except BackboneError:
        raise
    except Exception as exc:  # the libraries' own errors for broken folders vary
        first = (str(exc).splitlines() or [""])[0][:200]
        raise BackboneError(
            f"backbone {name!r}: cannot load the {kind} model in {folder} "
            f"({type(exc).__name__}: {first})"
        ) from None


def build_action_model(config: ModelConfig) -> ActionModel:
    """`models.action_model.build_model` with its frame backbone loaded from a local folder
    when the config names one; `BackboneError` when it cannot be."""
    try:
        return build_model(config, backbone_loader=load_backbone)
    except ValueError as exc:
        if config.backbone.name == "builtin" or isinstance(exc, BackboneError):
            raise
        raise BackboneError(str(exc)) from None

"""Layer-wise learning-rate decay: one rule for layer ids and parameter groups.

The rule is the official MAE one (``util/lr_decay.py``), which ViTDet and BEiT also use:

* layer id: ``patch_embed.*``, ``cls_token``, ``pos_embed`` (and the other embedding tokens) -> 0;
  ``blocks.{i}.*`` -> ``i + 1``; anything else (final norm, BEiT's shared ``rel_pos_bias``, pyramid,
  FPN, RPN, heads) -> ``num_layers + 1``, where ``num_layers`` is the number of blocks (the depth);
* lr scale = ``layer_decay ** (num_layers + 1 - layer_id)``, so the heads train at the base lr and
  the patch embedding at ``layer_decay ** (depth + 1)`` of it;
* no weight decay for 1-D parameters (biases, norm weights, layer-scale gammas), the embedding
  tokens, ``pos_embed`` and relative-position tables (``rel_pos_h/w``,
  ``relative_position_bias_table``). MAE's ViT has no relative tables; timm's BEiT excludes its
  tables too, ViTDet's configs decay ``rel_pos_h/w``: we treat all position parameters alike.

A detector or segmentor keeps its ViT under a prefix (``"backbone.net."`` in both frameworks here),
found from the parameter names (:mod:`mae_transfer.models.naming`) unless given; names are made
relative to it before the rule is applied, and parameters outside it get the top layer id.
"""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Iterable, Mapping

from torch import nn

from mae_transfer.errors import ConfigError
from mae_transfer.models.naming import EMBEDDING_NAMES, block_index, block_indices, find_vit_prefix, is_embedding
from mae_transfer.utils.logger import get_logger

logger = get_logger(__name__)

# Leaf names that never get weight decay, whatever their number of dimensions.
NO_WEIGHT_DECAY = EMBEDDING_NAMES + ("rel_pos_h", "rel_pos_w", "relative_position_bias_table")


def get_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a ViT parameter.

    Args:
        name: parameter name relative to the ViT, e.g. ``"blocks.3.attn.qkv.weight"``.
        num_layers: number of transformer blocks (the depth).

    Returns:
        0 for the patch embedding and embedding tokens, ``i + 1`` for block ``i``,
        ``num_layers + 1`` for everything else.
    """
    if is_embedding(name):
        return 0
    index = block_index(name)
    return num_layers + 1 if index is None else index + 1


def infer_num_layers(names: Iterable[str], backbone_prefix: str = "") -> int:
    """Number of blocks of the ViT under ``backbone_prefix``: 1 + the largest ``blocks.{i}`` index."""
    ids = block_indices(names, backbone_prefix)
    if not ids:
        raise ValueError(
            f"No parameter named '{backbone_prefix}blocks.<i>.*' in the model: check the backbone "
            f"prefix {backbone_prefix!r} (it must be the path of the ViT module, ending with '.')."
        )
    return max(ids) + 1


def find_backbone_prefix(model: nn.Module) -> str:
    """Path (with a trailing dot) of the first ViT in ``model``, found from its parameter names
    (``patch_embed.*`` and ``blocks.<i>.*``, see :mod:`mae_transfer.models.naming`); ``""`` when
    ``model`` is the ViT itself."""
    return resolve_prefix([n for n, _ in model.named_parameters()], None, type(model).__name__)


def resolve_prefix(names: Iterable[str], backbone_prefix: str | None, owner: str = "the model") -> str:
    """``backbone_prefix`` checked against ``names``, or found from them when None."""
    names = list(names)
    if backbone_prefix is not None:
        check_prefix(names, backbone_prefix)
        return backbone_prefix
    prefix = find_vit_prefix(names)
    if prefix is None:
        raise ValueError(
            f"No Vision Transformer (parameters 'patch_embed.*' and 'blocks.<i>.*') inside {owner}; "
            "pass backbone_prefix explicitly."
        )
    return prefix


def check_prefix(names: Iterable[str], backbone_prefix: str) -> None:
    """Raise a clear error when no parameter lives under ``backbone_prefix``."""
    names = list(names)
    if not any(n.startswith(backbone_prefix) for n in names):
        top = sorted({n.split(".", 1)[0] for n in names})
        raise ValueError(
            f"No parameter name starts with the backbone prefix {backbone_prefix!r}; the model's "
            f"top-level modules are {top}: pass the path of the ViT module, ending with '.'."
        )


def layer_id_of(name: str, num_layers: int, backbone_prefix: str = "") -> int:
    """Layer id of a parameter of a whole model whose ViT lives under ``backbone_prefix``."""
    if not name.startswith(backbone_prefix):
        return num_layers + 1
    return get_layer_id(name[len(backbone_prefix):], num_layers)


def _has_weight_decay(name: str, param: nn.Parameter, no_weight_decay: Iterable[str]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim > 1 and leaf not in no_weight_decay


def _matches(pattern: str, name: str) -> bool:
    """An override pattern matches a leaf name exactly or the full name as a glob."""
    return pattern == name.rsplit(".", 1)[-1] or fnmatch(name, pattern)


def _check_overrides(overrides: Mapping[str, Mapping[str, float]], names: list[str]) -> None:
    for pattern, values in overrides.items():
        unknown = set(values) - {"weight_decay", "lr_mult"}
        if unknown:
            raise ConfigError(
                f"Layer-decay override {pattern!r} has unknown keys {sorted(unknown)}; "
                "use 'weight_decay' (replaces it) and/or 'lr_mult' (multiplies the lr scale)."
            )
        if not any(_matches(pattern, n) for n in names):
            logger.warning("Layer-decay override %r matches no parameter name; it has no effect.", pattern)


def param_settings(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float,
    backbone_prefix: str | None = None,
    num_layers: int | None = None,
    no_weight_decay: Iterable[str] = NO_WEIGHT_DECAY,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict]:
    """Per-parameter record: name, shape, layer id, lr scale, weight decay, trainable.

    Frozen parameters are listed too (``trainable=False``); see :func:`param_groups` for the
    arguments. This is what :func:`param_groups` groups and what the inspection tool prints.
    """
    named = list(model.named_parameters())
    backbone_prefix = resolve_prefix((n for n, _ in named), backbone_prefix, type(model).__name__)
    if num_layers is None:
        num_layers = infer_num_layers((n for n, _ in named), backbone_prefix)
    no_weight_decay = tuple(no_weight_decay)
    overrides = overrides or {}
    _check_overrides(overrides, [n for n, _ in named])
    records = []
    for name, param in named:
        layer_id = layer_id_of(name, num_layers, backbone_prefix)
        override = {k: v for pattern, values in overrides.items() if _matches(pattern, name)
                    for k, v in values.items()}
        wd = weight_decay if _has_weight_decay(name, param, no_weight_decay) else 0.0
        records.append(
            dict(
                name=name,
                shape=tuple(param.shape),
                layer_id=layer_id,
                lr_scale=layer_decay ** (num_layers + 1 - layer_id) * override.get("lr_mult", 1.0),
                weight_decay=override.get("weight_decay", wd),
                trainable=param.requires_grad,
            )
        )
    return records


def param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    layer_decay: float,
    backbone_prefix: str | None = None,
    num_layers: int | None = None,
    no_weight_decay: Iterable[str] = NO_WEIGHT_DECAY,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict]:
    """Optimizer parameter groups with layer-wise lr decay; frozen parameters are left out.

    Args:
        model: the whole model (classifier, detector or segmentor).
        base_lr: learning rate of the top layer (heads).
        weight_decay: weight decay of parameters that get one (see module docstring).
        layer_decay: per-layer lr multiplier (0.65 for MAE ViT-B on ADE20K; 1.0 turns decay off).
        backbone_prefix: path of the ViT inside ``model`` with a trailing dot, e.g.
            ``"backbone.net."``; ``""`` when ``model`` is the ViT (or a timm classifier). None
            (default): the first ViT found from the parameter names (:func:`find_backbone_prefix`).
        num_layers: ViT depth; inferred from the ``blocks.{i}`` names when None.
        no_weight_decay: leaf parameter names that never get weight decay (besides 1-D ones).
        overrides: ``{pattern: {"weight_decay": wd, "lr_mult": m}}``; a pattern matches a leaf
            name exactly or the full name as a glob (``"backbone.net.blocks.0.*"``). Later keys win.

    Returns:
        One dict per distinct (lr scale, weight decay), largest lr first (MMEngine logs the first
        group's lr), with keys ``params``, ``param_names`` (torch's own key for parameter names),
        ``lr`` (= base_lr * lr_scale), ``lr_scale`` (what MAE's schedulers multiply by),
        ``weight_decay`` and ``layer_ids``.
    """
    params = dict(model.named_parameters())
    settings = param_settings(
        model,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        backbone_prefix=backbone_prefix,
        num_layers=num_layers,
        no_weight_decay=no_weight_decay,
        overrides=overrides,
    )
    groups: dict[tuple[float, float], dict] = {}
    for s in settings:
        if not s["trainable"]:
            continue
        key = (s["lr_scale"], s["weight_decay"])
        group = groups.setdefault(
            key,
            dict(params=[], param_names=[], lr=base_lr * key[0], lr_scale=key[0],
                 weight_decay=key[1], layer_ids=[]),
        )
        group["params"].append(params[s["name"]])
        group["param_names"].append(s["name"])
        if s["layer_id"] not in group["layer_ids"]:
            group["layer_ids"].append(s["layer_id"])
    if not groups:
        raise ConfigError(
            "The model has no trainable parameter: the freeze policy froze everything; "
            "use 'full', 'last_k_blocks:K' or 'frozen_backbone' instead."
        )
    return sorted(groups.values(), key=lambda g: (-g["lr_scale"], g["weight_decay"]))

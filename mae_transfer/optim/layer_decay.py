"""Layer-wise learning-rate decay: one rule for layer ids, a named per-recipe rule for weight decay.

Layer ids and lr scales are one rule, the same in MAE (``util/lr_decay.py``), Detectron2's ViTDet
(``get_vit_lr_decay_rate``) and MMSeg/BEiT (``LayerDecayOptimizerConstructor``):

* layer id: ``patch_embed.*``, ``cls_token``, ``pos_embed`` (and the other embedding tokens) -> 0;
  ``blocks.{i}.*`` -> ``i + 1``; anything else (final norm, BEiT's shared ``rel_pos_bias``, pyramid,
  FPN, RPN, heads) -> ``num_layers + 1``, where ``num_layers`` is the number of blocks (the depth);
* lr scale = ``layer_decay ** (num_layers + 1 - layer_id)``, so the heads train at the base lr and
  the patch embedding at ``layer_decay ** (depth + 1)`` of it.

Which tensors get no weight decay differs between the references, and each published number came
from its reference as it ran, so it is a named choice of the recipe (``weight_decay_rule``):

* ``"vitdet"`` -- Detectron2's ViTDet configs (``projects/ViTDet/configs/COCO/*``:
  ``get_default_optimizer_params(weight_decay_norm=0.0, overrides={"pos_embed": {"weight_decay":
  0.0}})``): zero only for parameters owned by a ``torch.nn`` normalisation module (exactly
  Detectron2's ``norm_module_types`` in ``detectron2/solver/build.py``) and for ``pos_embed``.
  Biases, ``rel_pos_h/w``, ``cls_token`` and the channel LayerNorm of the pyramid and the heads
  (``detectron2.layers.LayerNorm`` is a plain ``nn.Module``) ARE decayed. Needs module types, not
  only names. Default of the Detectron2 glue (``SOLVER.WEIGHT_DECAY_RULE``).
* ``"beit"`` -- MMSeg's ``LayerDecayOptimizerConstructor`` (``mmseg/engine/optimizers/
  layer_decay_optimizer_constructor.py``) and BEiT's semantic-segmentation code, as they run: zero
  for 1-d tensors and names ending in ``.bias``. Their test ``name in ('pos_embed', 'cls_token')``
  compares full names (``backbone.pos_embed``) and never matches, so ``pos_embed``, ``cls_token``
  and the relative position bias tables ARE decayed. Default of the MMSeg glue
  (``paramwise_cfg=dict(weight_decay_rule=...)``).
* ``"mae"`` -- MAE's classification fine-tuning (``util/lr_decay.py`` with
  ``model.no_weight_decay()`` of ``models_vit.py``): zero for 1-d tensors and ``pos_embed``,
  ``cls_token``, ``dist_token`` (names relative to the ViT). Default of :func:`param_groups`.

A detector or segmentor keeps its ViT under a prefix (``"backbone.net."`` in both frameworks here),
found from the parameter names (:mod:`mae_transfer.models.naming`) unless given; names are made
relative to it before the rule is applied, and parameters outside it get the top layer id.
"""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Iterable, Mapping

from torch import nn

from mae_transfer.errors import ConfigError
from mae_transfer.models.naming import block_index, block_indices, find_vit_prefix, is_embedding
from mae_transfer.utils.logger import get_logger

logger = get_logger(__name__)

# Detectron2's ``norm_module_types`` (detectron2/solver/build.py, get_default_optimizer_params;
# its NaiveSyncBatchNorm inherits from BatchNorm2d).
TORCH_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)
# MAE models_vit.VisionTransformer.no_weight_decay() (+ DeiT's dist_token).
MAE_NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "dist_token")
WEIGHT_DECAY_RULES = ("vitdet", "beit", "mae")
DEFAULT_WEIGHT_DECAY_RULE = "mae"


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


def check_weight_decay_rule(rule: str) -> str:
    """Return ``rule`` if it is a known weight-decay rule, else raise one clear sentence."""
    if rule not in WEIGHT_DECAY_RULES:
        raise ValueError(
            f"Unknown weight-decay rule {rule!r}; use one of {', '.join(WEIGHT_DECAY_RULES)} "
            "(SOLVER.WEIGHT_DECAY_RULE in Detectron2 configs, paramwise_cfg.weight_decay_rule in MMSeg ones)."
        )
    return rule


def owner_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the module that holds it directly (first owner, as named_parameters)."""
    owners: dict[str, nn.Module] = {}
    for module_name, module in model.named_modules():
        for leaf, _ in module.named_parameters(recurse=False):
            owners.setdefault(f"{module_name}.{leaf}" if module_name else leaf, module)
    return owners


def is_decayed(rule: str, name: str, param: nn.Parameter, owner: nn.Module | None, backbone_prefix: str) -> bool:
    """Whether the named weight-decay rule (module docstring) decays ``param``.

    Args:
        name: full parameter name in the model; ``owner``: the module holding it directly;
        backbone_prefix: path of the ViT (the ``mae`` rule compares names relative to it).
    """
    leaf = name.rsplit(".", 1)[-1]
    if rule == "vitdet":
        return not isinstance(owner, TORCH_NORM_TYPES) and leaf != "pos_embed"
    if rule == "beit":
        return param.ndim > 1 and not name.endswith(".bias")
    relative = name[len(backbone_prefix):] if name.startswith(backbone_prefix) else None
    return param.ndim > 1 and relative not in MAE_NO_WEIGHT_DECAY


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
    weight_decay_rule: str = DEFAULT_WEIGHT_DECAY_RULE,
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
    check_weight_decay_rule(weight_decay_rule)
    owners = owner_modules(model)
    overrides = overrides or {}
    _check_overrides(overrides, [n for n, _ in named])
    records = []
    for name, param in named:
        layer_id = layer_id_of(name, num_layers, backbone_prefix)
        override = {k: v for pattern, values in overrides.items() if _matches(pattern, name)
                    for k, v in values.items()}
        decayed = is_decayed(weight_decay_rule, name, param, owners.get(name), backbone_prefix)
        wd = weight_decay if decayed else 0.0
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
    weight_decay_rule: str = DEFAULT_WEIGHT_DECAY_RULE,
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
        weight_decay_rule: which tensors get no weight decay: ``"vitdet"``, ``"beit"`` or ``"mae"``
            (module docstring; each is the rule of the reference whose numbers a recipe cites).
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
        weight_decay_rule=weight_decay_rule,
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

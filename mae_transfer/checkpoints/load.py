"""``load_pretrained``: any supported checkpoint -> a ViT (and its pyramid), with a report."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import nn

from mae_transfer.errors import CheckpointError
from mae_transfer.models import MultiLevelPyramid, SimplePyramid
from mae_transfer.models.naming import block_indices, find_vit_prefix
from mae_transfer.utils.logger import get_logger

from .adapt import adapt_vit
from .io import read_checkpoint
from .layouts import LAYOUTS, Converted, convert_state_dict, unwrap
from .report import LoadReport

logger = get_logger(__name__)
Tensor = torch.Tensor

# Model keys a checkpoint may lack for a known reason: (pattern, reason, set to zero).
EXPECTED_MISSING: tuple[tuple[str, str, bool], ...] = (
    (r"\.attn\.rel_pos_[hw]$", "decomposed relative position tables are new in the ViTDet "
     "backbone; set to zero (ViTDet's initialisation)", True),
    (r"relative_position_bias_table$", "relative position bias not in the checkpoint; set to "
     "zero (the MAE/BEiT transfer recipe)", True),
    (r"^norm\.", "the checkpoint has no final norm (ViTDet backbone, or a mean-pooling "
     "classifier); left at its initial value, unused by forward_maps", False),
    (r"^cls_token$", "the checkpoint has no class token (ViTDet backbone); left at its initial "
     "value", False),
    (r"^pos_embed$", "the checkpoint has no absolute position embedding (BEiT uses relative "
     "position bias only); left at its initial value", False),
    (r"\.gamma_[12]$", "the checkpoint has no layer scale; left at its initial value", False),
    (r"^reg_token$", "the checkpoint has no register tokens; left at their initial value", False),
)
# Checkpoint tensors a model variant has no place for, by design: (pattern, reason).
EXPECTED_UNUSED: tuple[tuple[str, str], ...] = (
    (r"^cls_token$", "the model uses no class token (window attention, as in ViTDet)"),
    (r"^pos_embed$", "the model has no absolute position embedding (use_abs_pos=False)"),
    (r"^norm\.", "the model has no final norm (final_norm=False)"),
    (r"^reg_token$", "the model has no register tokens (num_reg_tokens=0, e.g. window attention)"),
)


def _is_pyramid(module: nn.Module) -> bool:
    return isinstance(module, (SimplePyramid, MultiLevelPyramid))


def _given_prefix(model: nn.Module, prefix: str, what: str) -> str:
    """``prefix`` normalised to end with '.', checked to name a submodule of ``model``."""
    prefix = prefix if not prefix or prefix.endswith(".") else prefix + "."
    try:
        model.get_submodule(prefix.rstrip("."))
    except AttributeError as err:
        raise ValueError(f"The model has no submodule '{prefix.rstrip('.')}' to load the {what} into; "
                         f"check prefix=") from err
    return prefix


def _vit_prefix(model: nn.Module, prefix: Optional[str]) -> str:
    """Where the ViT lives: ``prefix`` as given, else found from the parameter names."""
    if prefix is not None:
        return _given_prefix(model, prefix, "ViT")
    found = find_vit_prefix(name for name, _ in model.named_parameters())
    if found is None:
        raise ValueError(f"Found no ViT (parameters patch_embed.* and blocks.<i>.*) in {type(model).__name__}; "
                         f"pass prefix= to say where it is.")
    return found


def _pyramid_prefix(model: nn.Module, prefix: Optional[str]) -> Optional[str]:
    """Where the pyramid lives: ``prefix`` as given, else the first pyramid module, else None."""
    if prefix is not None:
        return _given_prefix(model, prefix, "pyramid")
    for name, module in model.named_modules():
        if _is_pyramid(module):
            return f"{name}." if name else ""
    return None


def _sub(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_fit(source: str, pairs: list[tuple[str, Tensor, Tensor]], src_blocks: set[int],
               dst_blocks: set[int], loaded: int) -> None:
    """Raise :class:`CheckpointError` when the checkpoint does not fit the model."""
    bad = [(k, tuple(a.shape), tuple(b.shape)) for k, a, b in pairs if a.shape != b.shape]
    if bad:
        first = "; ".join(f"{k} is {a} in the checkpoint but {b} in the model" for k, a, b in bad[:2])
        raise CheckpointError(
            f"Checkpoint {source} does not fit the model: {first} ({len(bad)} mismatching tensors in "
            f"all); it was made for another architecture or size (e.g. ViT-L weights into a ViT-B), "
            f"so build the matching model (--model / create_vit name)."
        )
    if src_blocks and dst_blocks and src_blocks != dst_blocks:
        raise CheckpointError(
            f"Checkpoint {source} has {len(src_blocks)} transformer blocks but the model has "
            f"{len(dst_blocks)}; build the model with depth={len(src_blocks)} (or the matching preset)."
        )
    if loaded == 0:
        raise CheckpointError(f"Checkpoint {source} shares no tensor with the model; is it "
                              f"a checkpoint of this model type?")


def _explain_missing(missing: list[str], vit_prefix: str, buffers: set[str]) -> dict[str, tuple[str, bool]]:
    explained = {}
    for key in missing:
        if key in buffers:
            explained[key] = ("buffer computed by the model, not a weight", False)
            continue
        if not key.startswith(vit_prefix):
            continue
        sub = key[len(vit_prefix):]
        for pattern, reason, zero in EXPECTED_MISSING:
            if re.search(pattern, sub):
                explained[key] = (reason, zero)
                break
    return explained


def convert_checkpoint(checkpoint: Mapping[str, Any], layout: Optional[str] = None,
                       name: str = "<state dict>") -> Converted:
    """Unwrap, detect (or force ``layout``) and convert a loaded checkpoint object; container
    entries that are not weights (optimizer, epoch, meta) are listed as ignored.

    Raises:
        CheckpointError: not a ViT checkpoint in a known layout.
    """
    try:
        state_dict, skipped = unwrap(checkpoint)
        forced = next((row for row in LAYOUTS if row.name == layout), None) if layout else None
        if layout and forced is None:
            raise CheckpointError(f"unknown layout '{layout}' (known: {sorted({r.name for r in LAYOUTS})})")
        converted = convert_state_dict(state_dict, forced)
    except CheckpointError as err:
        raise CheckpointError(
            f"Checkpoint {name} is not a ViT checkpoint in a known layout: {err}.") from None
    converted.ignored.update(skipped)
    return converted


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    strict: bool = False,
    unsafe: bool = False,
    prefix: Optional[str] = None,
    pyramid_prefix: Optional[str] = None,
    layout: Optional[str] = None,
    name: Optional[str] = None,
) -> LoadReport:
    """Load a pretrained ViT checkpoint of any supported layout into ``model``.

    Args:
        model: a ViT (timm names), or a module holding one (and optionally a ``SimplePyramid``).
        source: file path, http(s) URL (cached), or an already loaded checkpoint dict.
        strict: also fail when keys are missing or unexpected without an explanation.
        unsafe: allow pickles that run code when loaded (only for trusted files).
        prefix: where the ViT lives in ``model`` (e.g. ``"backbone.net."``); found when omitted.
        pyramid_prefix: where the pyramid lives (``""``: the model itself); found when omitted (the
            first ``SimplePyramid`` / ``MultiLevelPyramid``, subclasses included).
        layout: force a layout name from :data:`~.layouts.LAYOUTS` instead of detecting it.
        name: how to call the checkpoint in messages (default: the path, or "<state dict>").

    Returns:
        :class:`LoadReport`, also logged at INFO.

    Raises:
        CheckpointError: the file is unreadable, not a ViT, or does not fit the model.
        UnsafeCheckpointError: a file that runs code when unpickled, refused.
    """
    name = name or (str(source) if not isinstance(source, Mapping) else "<state dict>")
    obj = source if isinstance(source, Mapping) else read_checkpoint(source, unsafe=unsafe)
    converted = convert_checkpoint(obj, layout=layout, name=name)
    report = _load_converted(model, converted, name, prefix, pyramid_prefix)
    logger.info("%s", report.summary())
    if strict and report.unexplained:
        raise CheckpointError(
            f"Checkpoint {name} left keys unexplained with strict=True: {', '.join(report.unexplained[:5])}; "
            f"see the load report, or load with strict=False."
        )
    return report


@dataclass
class _Plan:
    """Tensors to load (model key -> tensor) and the bookkeeping for the report."""

    target: Mapping[str, Tensor]
    tensors: dict[str, Tensor] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)  # keys whose shapes must match
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)

    def place(self, key: str, value: Tensor, unused_reason: Optional[str] = None) -> None:
        if key in self.target:
            self.tensors[key] = value
            self.checked.append(key)
        elif unused_reason:
            self.ignored[key] = unused_reason
        else:
            self.unexpected.append(key)

    def mismatches(self) -> list[tuple[str, Tensor, Tensor]]:
        order = {k: i for i, k in enumerate(self.target)}
        return [(k, self.tensors[k], self.target[k]) for k in sorted(self.checked, key=order.__getitem__)]


def _unused_reason(vit_key: str) -> Optional[str]:
    return next((reason for pattern, reason in EXPECTED_UNUSED if re.search(pattern, vit_key)), None)


def _load_converted(model: nn.Module, conv: Converted, name: str, prefix: Optional[str],
                    pyramid_prefix: Optional[str]) -> LoadReport:
    vit_prefix = _vit_prefix(model, prefix)
    pyr_prefix = _pyramid_prefix(model, pyramid_prefix)
    plan = _Plan(model.state_dict(), ignored=dict(conv.ignored))
    vit_target = _sub(plan.target, vit_prefix)
    adapted = adapt_vit(conv.vit, vit_target, model.get_submodule(vit_prefix.rstrip(".")))
    for key, value in adapted.state_dict.items():
        plan.place(vit_prefix + key, value, _unused_reason(key))
    regions = [vit_prefix]
    if conv.pyramid and pyr_prefix is None:
        plan.ignored.update({f"pyramid.{k}": "pyramid weights; the model has no pyramid" for k in conv.pyramid})
    elif conv.pyramid:
        regions.append(pyr_prefix)
        for key, value in conv.pyramid.items():
            plan.place(pyr_prefix + key, value)
    _place_rest(plan, conv, tuple(regions))
    _check_fit(name, plan.mismatches(), block_indices(adapted.state_dict), block_indices(vit_target),
               sum(k.startswith(vit_prefix) for k in plan.tensors))

    missing = [k for k in plan.target if k.startswith(tuple(regions)) and k not in plan.tensors]
    explained = _explain_missing(missing, vit_prefix, {n for n, _ in model.named_buffers()})
    with torch.no_grad():
        model.load_state_dict(plan.tensors, strict=False)
        params = dict(model.named_parameters())
        for key, (_, zero) in explained.items():
            if zero and key in params:
                params[key].zero_()
    return LoadReport(name, conv.layout, conv.description, loaded=list(plan.tensors), missing=missing,
                      unexpected=plan.unexpected, ignored=plan.ignored,
                      resized={vit_prefix + k: v for k, v in adapted.resized.items()},
                      explained={k: r for k, (r, _) in explained.items()}, notes=conv.notes + adapted.notes)


def _place_rest(plan: _Plan, conv: Converted, regions: tuple[str, ...]) -> None:
    """Other parts of a whole model (detector/segmentor heads) load where the model has the same
    name and shape outside the ViT/pyramid; otherwise they are ignored with the reason."""
    for key, value in conv.rest.items():
        want = plan.target.get(key)
        if want is not None and want.shape == value.shape and not key.startswith(regions):
            plan.tensors[key] = value
        elif want is not None:
            plan.ignored[key] = f"shape {tuple(value.shape)} differs from the model's {tuple(want.shape)}"
        else:
            plan.ignored[key] = conv.rest_reason

"""Recognise a checkpoint's key layout and rename it to this project's names (pure functions).

Every layout is one :class:`Layout` row: how to recognise it, which key prefixes hold the ViT,
the pyramid, other parts of a whole model, or things to drop (with the reason), and which
renaming table turns its ViT names into ours (timm's ``VisionTransformer``/``Beit`` names, see
:mod:`mae_transfer.models.vit`). Adding a layout that only differs by prefix is one line in
:data:`LAYOUTS`. Nothing here needs a model: ``state_dict -> Converted``; fitting the tensors to
a model's geometry is :mod:`.adapt`'s job.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from mae_transfer.errors import CheckpointError

Tensor = torch.Tensor

# Roles a key prefix can play.
VIT, PYRAMID, REST = "vit", "pyramid", "rest"

# Keys dropped from the ViT part wherever they appear (after renaming), with the reason.
IGNORED_VIT_KEYS: Sequence[tuple[str, str]] = (
    (r"^decoder_|^decoder\.", "MAE decoder, not part of the encoder"),
    (r"^mask_token$", "mask token of masked-image pretraining, not used after pretraining"),
    (r"^lm_head\.", "BEiT pretraining head (visual-token classifier)"),
    (r"^(head|head_dist)\.", "classification / projection head, not part of the backbone"),
    (r"^dist_token$", "DeiT distillation token, not used by the backbone"),
    (r"^fc_norm\.", "norm of the mean-pooling classifier, not used by the backbone"),
    (r"relative_position_index$", "index buffer, rebuilt from the model geometry"),
    (r"\.k_bias$", "zero k-bias buffer of BEiT attention"),
)

# Renaming tables: ordered (regex, replacement) applied to every ViT key.
TIMM_RENAMES: Sequence[tuple[str, str]] = (
    (r"\.ls1\.gamma$", ".gamma_1"),  # timm VisionTransformer LayerScale -> Beit-style names
    (r"\.ls2\.gamma$", ".gamma_2"),
)
MMSEG_RENAMES: Sequence[tuple[str, str]] = (
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.", r"blocks.\1."),
    (r"^(blocks\.\d+)\.ln1\.", r"\1.norm1."),
    (r"^(blocks\.\d+)\.ln2\.", r"\1.norm2."),
    (r"\.attn\.attn\.in_proj_(weight|bias)$", r".attn.qkv.\1"),  # nn.MultiheadAttention: [q; k; v]
    (r"\.attn\.attn\.out_proj\.", ".attn.proj."),
    (r"\.ffn\.layers\.0\.0\.", ".mlp.fc1."),
    (r"\.ffn\.layers\.1\.", ".mlp.fc2."),
    (r"^ln1\.", "norm."),  # final norm (final_norm=True)
)
NAMINGS = {"timm": TIMM_RENAMES, "mmseg": MMSEG_RENAMES}


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout.

    Args:
        name: short id reported to the user (``report.layout``).
        description: where such checkpoints come from.
        detect: predicate on the set of keys of the unwrapped state dict.
        prefixes: ``(checkpoint prefix, role)`` pairs, longest match wins; a role is ``"vit"``,
            ``"pyramid"``, ``"rest"`` (kept under its own name for a whole model) or
            ``"ignore: <reason>"``. Keys matching no prefix are ``"rest"``.
        naming: renaming table for the ViT part, a key of :data:`NAMINGS`.
        rest_reason: why ``"rest"`` keys are dropped when the model has no such keys.
    """

    name: str
    description: str
    detect: Callable[[set], bool]
    prefixes: Sequence[tuple[str, str]] = (("", VIT),)
    naming: str = "timm"
    rest_reason: str = "not part of the backbone"


def _starts(*prefixes: str) -> Callable[[set], bool]:
    return lambda keys: any(k.startswith(prefixes) for k in keys)


def _contains(pattern: str) -> Callable[[set], bool]:
    regex = re.compile(pattern)
    return lambda keys: any(regex.search(k) for k in keys)


def _all(*preds: Callable[[set], bool]) -> Callable[[set], bool]:
    return lambda keys: all(p(keys) for p in preds)


def _not(pred: Callable[[set], bool]) -> Callable[[set], bool]:
    return lambda keys: not pred(keys)


_MOCO_MOMENTUM = "ignore: MoCo v3 momentum encoder (moving average of the base encoder)"
_MOCO_PREDICTOR = "ignore: MoCo v3 predictor MLP"
_D2_HEADS = "Detectron2 detector parts (proposal_generator, roi_heads), used only by a whole detector"
_MMSEG_HEADS = "MMSeg decode/auxiliary heads and neck, used only by a whole segmentor"
_VIT_KEYS = _contains(r"^blocks\.0\.attn\.(qkv|q_bias|proj)")


def _mmseg_layouts(prefix: str, where: str, rest: str) -> list[Layout]:
    base = _starts(f"{prefix}layers.0.")
    prefixes = ((prefix, VIT),) if not prefix else ((prefix, VIT), ("", REST))
    kinds = (
        ("mmseg_vit", "MMSeg VisionTransformer", _contains(r"\.attn\.attn\.in_proj_weight$")),
        ("mmseg_beit", "MMSeg BEiT", _contains(r"\.attn\.q_bias$")),
        ("mmseg_mae", "MMSeg MAE", lambda keys: True),
    )
    return [Layout(name, f"{desc} backbone ({where}), mmseg names", _all(base, pred), prefixes,
                   naming="mmseg", rest_reason=rest) for name, desc, pred in kinds]


# Order matters: the first layout whose detect() holds is used.
LAYOUTS: list[Layout] = [
    Layout("moco_v3", "MoCo v3 ({'state_dict'}: module.base_encoder / momentum_encoder)",
           _starts("module.base_encoder.", "base_encoder."),
           (("module.base_encoder.", VIT), ("base_encoder.", VIT),
            ("module.momentum_encoder.", _MOCO_MOMENTUM), ("momentum_encoder.", _MOCO_MOMENTUM),
            ("module.predictor.", _MOCO_PREDICTOR), ("predictor.", _MOCO_PREDICTOR))),
    # This project's own training checkpoints (mae_transfer/det/backbone.py, seg/backbone.py). The
    # ViTDet-style det backbone uses Detectron2's own names, so its checkpoints are "vitdet".
    Layout("mae_transfer_det", "mae_transfer Detectron2 model, multi-level pyramid + FPN (backbone.bottom_up.*)",
           _starts("backbone.bottom_up.net."),
           (("backbone.bottom_up.net.", VIT), ("backbone.bottom_up.pyramid.", PYRAMID), ("", REST)),
           rest_reason=_D2_HEADS),
    Layout("mae_transfer_seg", "mae_transfer MMSeg model (backbone.net / neck.pyramid)",
           _all(_starts("backbone.net."), _starts("decode_head.")),
           (("backbone.net.", VIT), ("neck.pyramid.", PYRAMID), ("", REST)), rest_reason=_MMSEG_HEADS),
    Layout("vitdet", "ViTDet / Detectron2 (backbone.net.* ViT, backbone.simfp_* pyramid), incl. mae_transfer's",
           _starts("backbone.net."),
           (("backbone.net.", VIT), ("backbone.", PYRAMID), ("", REST)), rest_reason=_D2_HEADS),
    *_mmseg_layouts("backbone.", "whole segmentor", _MMSEG_HEADS),
    *_mmseg_layouts("", "backbone only", "not part of the backbone"),
    Layout("mae_transfer", "mae_transfer converted weights (ViT + pyramid.*)",
           _all(_VIT_KEYS, _starts("pyramid.")), (("pyramid.", PYRAMID), ("", VIT))),
    Layout("beit", "BEiT (unilm or timm Beit names)",
           _all(_VIT_KEYS, _contains(r"(\.attn\.q_bias|relative_position_bias_table)$"))),
    Layout("mae_pretrain", "MAE full pretraining checkpoint (encoder + decoder)",
           _all(_VIT_KEYS, _starts("decoder_"))),
    Layout("timm_vit", "DeiT / timm ViT with classifier head",
           _all(_VIT_KEYS, _starts("head", "dist_token"))),
    Layout("timm_vit_ddp", "timm-name ViT saved from DistributedDataParallel (module.*)",
           _starts("module.blocks.0.attn."), (("module.", VIT),)),
    Layout("mae", "ViT encoder in timm names: MAE release, or a headless timm/DeiT ViT", _VIT_KEYS),
]

CONTAINER_KEYS = ("state_dict", "model", "module", "model_state")


@dataclass
class Converted:
    """A checkpoint split by role, in this project's names.

    Attributes:
        layout / description: the detected :class:`Layout`.
        vit: ViT tensors, timm names relative to the ViT (``blocks.0.attn.qkv.weight``).
        pyramid: pyramid tensors, names relative to the pyramid module.
        rest: other tensors of a whole model, under their checkpoint names.
        ignored: checkpoint key -> reason it is not loaded.
        notes: conversions worth telling the user about.
    """

    layout: str
    description: str
    vit: dict[str, Tensor] = field(default_factory=dict)
    pyramid: dict[str, Tensor] = field(default_factory=dict)
    rest: dict[str, Tensor] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rest_reason: str = "not part of the backbone"


def unwrap(obj: Any) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Find the state dict inside a checkpoint object.

    Handles ``{'model': ...}`` (MAE, DeiT, BEiT, Detectron2), ``{'state_dict': ...}`` (MoCo v3,
    MMEngine) and bare state dicts, nested ones included. Returns the state dict and the other
    top-level entries (optimizer, epoch, meta...) as ``name -> reason`` for the report.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, got {type(obj).__name__}")
    skipped: dict[str, str] = {}
    while not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(f"no state dict among the entries {sorted(obj)[:6]}")
        skipped.update({f"<{k}>": "training state / metadata, not weights" for k in obj if k != inner})
        obj = obj[inner]
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    skipped.update({k: "not a tensor" for k in obj if k not in tensors})
    return tensors, skipped


def detect_layout(state_dict: Mapping[str, Tensor]) -> Layout:
    """Return the first :data:`LAYOUTS` row that recognises ``state_dict`` (already unwrapped)."""
    keys = set(state_dict)
    for layout in LAYOUTS:
        if layout.detect(keys):
            return layout
    first = ", ".join(list(state_dict)[:3]) or "none"
    raise CheckpointError(
        f"no ViT weights found (first keys: {first}); expected keys such as "
        f"patch_embed.proj.weight and blocks.0.attn.qkv.weight in a known layout"
    )


def rename(key: str, table: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


def _route(key: str, prefixes: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Return ``(role, key without the matched prefix)`` for the longest matching prefix."""
    best = max((p for p in prefixes if key.startswith(p[0])), key=lambda p: len(p[0]), default=None)
    if best is None:
        return REST, key
    prefix, role = best
    return role, key[len(prefix):]


def _ignore_reason(vit_key: str) -> str | None:
    return next((reason for pattern, reason in IGNORED_VIT_KEYS if re.search(pattern, vit_key)), None)


def convert_state_dict(state_dict: Mapping[str, Tensor], layout: Layout | None = None) -> Converted:
    """Split and rename an unwrapped state dict (see :func:`unwrap`) by ``layout``
    (detected when omitted). Pure: no model needed."""
    layout = layout or detect_layout(state_dict)
    out = Converted(layout.name, layout.description, rest_reason=layout.rest_reason)
    table = NAMINGS[layout.naming]
    for key, value in state_dict.items():
        role, sub = _route(key, layout.prefixes)
        if role.startswith("ignore:"):
            out.ignored[key] = role[len("ignore:"):].strip()
        elif role == PYRAMID:
            out.pyramid[sub] = value
        elif role == REST:
            out.rest[sub] = value
        else:
            name = rename(sub, table)
            reason = _ignore_reason(name)
            if reason:
                out.ignored[key] = reason
            else:
                out.vit[name] = value
    _add_absent_patch_bias(out)
    return out


def _add_absent_patch_bias(out: Converted) -> None:
    """MMSeg's ViT has no patch-embedding bias (``patch_bias=False``): a zero bias is equivalent."""
    weight = out.vit.get("patch_embed.proj.weight")
    if weight is not None and "patch_embed.proj.bias" not in out.vit:
        out.vit["patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])
        out.notes.append("patch_embed.proj.bias: absent in the checkpoint (bias-free conv), set to zeros")


def convert_to_vit(checkpoint: Any) -> dict[str, Tensor]:
    """Any supported checkpoint object -> the ViT state dict in our (timm) names."""
    state_dict, _ = unwrap(checkpoint)
    return convert_state_dict(state_dict).vit

"""Recognise a checkpoint's key layout and rename it to this project's names (pure functions).

Every layout is one :class:`Layout` row: how to recognise it, which key prefixes hold the ViT,
the pyramid, other parts of a whole model, or things to drop (with the reason), and which
renaming table turns its ViT names into ours (timm's ``VisionTransformer``/``Beit`` names, see
:mod:`mae_transfer.models.vit`). Adding a layout that only differs by prefix is one line in
:data:`LAYOUTS`. Nothing here needs a model: ``state_dict -> Converted``; fitting the tensors to
a model's geometry is :mod:`.adapt`'s job.

The rows here are other projects' checkpoint formats (MAE, timm, BEiT, MoCo v3, ViTDet, MMSeg).
A framework glue adds the layout of its own whole models with :func:`register_layout` when it is
imported (``mae_transfer.det`` and ``mae_transfer.seg`` do). A whole-model checkpoint no row
knows still loads its ViT: :func:`detect_layout` finds it by its names
(:mod:`mae_transfer.models.naming`) and keeps the other keys as "rest".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from mae_transfer.errors import CheckpointError
from mae_transfer.models.naming import find_vit_prefix

from .foundation import dinov2_hub_to_timm, sam_to_timm

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
        convert: pure ``state_dict -> (state_dict, notes)`` applied before routing (tensor
            reshapes or renames a regex table cannot do), or None.
    """

    name: str
    description: str
    detect: Callable[[set], bool]
    prefixes: Sequence[tuple[str, str]] = (("", VIT),)
    naming: str = "timm"
    rest_reason: str = "not part of the backbone"
    convert: Callable[[Mapping[str, Tensor]], tuple[dict, list]] | None = None


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


_SAM_NECK = ("ignore: SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d to 256 channels "
             "for SAM's mask decoder), not used: the pyramid reads the last block's map")
_SAM_PROMPT = "ignore: SAM prompt encoder (points, boxes, masks), not part of the image encoder"
_SAM_DECODER = "ignore: SAM mask decoder, not part of the image encoder"
FOUNDATION_LAYOUTS: list[Layout] = [
    Layout("sam", "official Segment Anything checkpoint (image_encoder.*, prompt_encoder.*, mask_decoder.*)",
           _starts("image_encoder.patch_embed."),
           (("image_encoder.", VIT), ("image_encoder.neck.", _SAM_NECK), ("prompt_encoder.", _SAM_PROMPT),
            ("mask_decoder.", _SAM_DECODER)),
           rest_reason="not part of SAM's image encoder", convert=sam_to_timm),
    Layout("timm_samvit", "timm samvit_* (SAM image encoder, timm names, neck.*)",
           _all(_VIT_KEYS, _starts("neck.0."), _contains(r"^blocks\.\d+\.attn\.rel_pos_h$")),
           (("", VIT), ("neck.", _SAM_NECK)), convert=sam_to_timm),
    Layout("dinov2", "official DINOv2 hub file (dinov2_vit*14[_reg4]_pretrain.pth: mask_token, ls1.gamma)",
           _all(_VIT_KEYS, _starts("mask_token"), _contains(r"\.ls1\.gamma$")), convert=dinov2_hub_to_timm),
    Layout("timm_dinov2", "headless timm ViT with layer scale / registers (vit_*_patch14[_reg4]_dinov2)",
           _all(_VIT_KEYS, _not(_starts("head", "dist_token")), _contains(r"^reg_token$|\.ls1\.gamma$"))),
]

# Order matters: the first layout whose detect() holds is used; registered layouts come first.
LAYOUTS: list[Layout] = [
    Layout("moco_v3", "MoCo v3 ({'state_dict'}: module.base_encoder / momentum_encoder)",
           _starts("module.base_encoder.", "base_encoder."),
           (("module.base_encoder.", VIT), ("base_encoder.", VIT),
            ("module.momentum_encoder.", _MOCO_MOMENTUM), ("momentum_encoder.", _MOCO_MOMENTUM),
            ("module.predictor.", _MOCO_PREDICTOR), ("predictor.", _MOCO_PREDICTOR))),
    # An MMSeg segmentor (decode_head.*) whose backbone holds a ViT as "net" is not a ViTDet model.
    Layout("vitdet", "ViTDet / Detectron2 (backbone.net.* ViT, backbone.simfp_* pyramid), incl. mae_transfer's",
           _all(_starts("backbone.net."), _not(_starts("decode_head."))),
           (("backbone.net.", VIT), ("backbone.", PYRAMID), ("", REST)), rest_reason=_D2_HEADS),
    *_mmseg_layouts("backbone.", "whole segmentor", _MMSEG_HEADS),
    *_mmseg_layouts("", "backbone only", "not part of the backbone"),
    Layout("mae_transfer", "mae_transfer converted weights (ViT + pyramid.*)",
           _all(_VIT_KEYS, _starts("pyramid.")), (("pyramid.", PYRAMID), ("", VIT))),
    *FOUNDATION_LAYOUTS,
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


def model_layout(name: str, description: str, vit: str, pyramid: str, *, requires: Sequence[str] = (),
                 rest_reason: str = "not part of the backbone") -> Layout:
    """The layout of a whole model: ViT keys under ``vit``, pyramid keys under ``pyramid``, the
    rest kept by name; recognised by keys under ``vit`` and under each of ``requires``."""
    detect = _all(_starts(vit), *(_starts(prefix) for prefix in requires))
    return Layout(name, description, detect, ((vit, VIT), (pyramid, PYRAMID), ("", REST)), rest_reason=rest_reason)


_registered: list[str] = []  # names of the layouts added by register_layout, in order


def register_layout(layout: Layout) -> Layout:
    """Add a layout, tried before the built-in ones (registered ones in registration order).

    For a framework glue's own whole models, e.g. a detector keeping its ViT under
    ``trunk.vit.`` and its pyramid under ``trunk.fpn.``::

        register_layout(model_layout("my_det", "my detector", vit="trunk.vit.", pyramid="trunk.fpn."))

    Registering a name again replaces that row (module reloads are harmless). Returns ``layout``.
    """
    if layout.name in _registered:
        LAYOUTS[_registered.index(layout.name)] = layout
        return layout
    if any(row.name == layout.name for row in LAYOUTS):
        raise ValueError(f"Checkpoint layout name {layout.name!r} is taken by a built-in layout; "
                         "register yours under another name.")
    LAYOUTS.insert(len(_registered), layout)
    _registered.append(layout.name)
    return layout


def _vit_in_model(keys: Sequence[str]) -> Layout | None:
    """A layout for a whole model no row knows, holding a timm-name ViT under some prefix."""
    prefix = find_vit_prefix(keys)
    if not prefix:
        return None
    return Layout("vit_in_model", f"a model holding a ViT at {prefix}* (other keys kept by name)",
                  lambda _: True, ((prefix, VIT), ("", REST)),
                  rest_reason="not part of the ViT, and the model's layout is not registered "
                              "(checkpoints.register_layout), so its pyramid is not recognised")


def detect_layout(state_dict: Mapping[str, Tensor]) -> Layout:
    """Return the first :data:`LAYOUTS` row that recognises ``state_dict`` (already unwrapped),
    else a generic layout when the keys hold a ViT under a prefix (``backbone.trunk.blocks.0...``)."""
    keys = set(state_dict)
    for layout in LAYOUTS:
        if layout.detect(keys):
            return layout
    generic = _vit_in_model(list(state_dict))
    if generic is not None:
        return generic
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
    if layout.convert is not None:
        state_dict, notes = layout.convert(state_dict)
        out.notes.extend(notes)
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

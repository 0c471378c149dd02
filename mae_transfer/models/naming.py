"""ViT parameter names: the one place that knows them (pure Python, no torch).

Our ViT uses timm's names (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.{i}.*``,
``norm``), as do timm's ``VisionTransformer``/``Beit``, MAE, DeiT and Detectron2's ViTDet ``ViT``.
:mod:`mae_transfer.optim` (layer ids, freeze policies) and :mod:`mae_transfer.checkpoints`
(finding the ViT inside a model, block counts) both read names through these functions, so the
two can never disagree about what a ViT or a block is.

A ViT is recognised by its names alone, in a model or a checkpoint alike: a prefix ``P`` ("" or
ending with ".") such that some names start with ``P + "patch_embed."`` and some with
``P + "blocks.<i>."``. ``decoder_blocks.*`` (MAE's decoder) or ``blocks_extra.*`` are not blocks.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

# Parameters of the ViT that sit before the first block (layer id 0, with ``patch_embed.*``).
EMBEDDING_NAMES = ("cls_token", "pos_embed", "dist_token", "reg_token", "mask_token")
PATCH_EMBED = "patch_embed."

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# "patch_embed." / "blocks.<i>." at the start of a name or right after a ".".
_PATCH_EMBED_AT = re.compile(r"(?<![^.])patch_embed\.")
_BLOCK_AT = re.compile(r"(?<![^.])blocks\.\d+\.")


def block_index(name: str) -> Optional[int]:
    """``i`` for a ViT-relative name ``"blocks.{i}.*"``, else None."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def block_indices(names: Iterable[str], prefix: str = "") -> set[int]:
    """Block indices among the names under ``prefix`` (names outside it are skipped)."""
    found = set()
    for name in names:
        if name.startswith(prefix):
            index = block_index(name[len(prefix):])
            if index is not None:
                found.add(index)
    return found


def is_embedding(name: str) -> bool:
    """True for the ViT-relative names before the first block: patch embedding and tokens."""
    return name in EMBEDDING_NAMES or name.startswith(PATCH_EMBED)


def vit_prefixes(names: Iterable[str]) -> list[str]:
    """Every prefix under which a ViT's names lie, in the order their ``patch_embed`` first appears.

    Args:
        names: parameter names of a module, or keys of a state dict.

    Returns:
        Prefixes such as ``"backbone.net."`` (``""`` for a bare ViT); empty when there is no ViT.
    """
    embeds: dict[str, None] = {}  # ordered set
    blocks: set[str] = set()
    for name in names:
        for match in _PATCH_EMBED_AT.finditer(name):
            embeds.setdefault(name[: match.start()], None)
        for match in _BLOCK_AT.finditer(name):
            blocks.add(name[: match.start()])
    return [prefix for prefix in embeds if prefix in blocks]


def find_vit_prefix(names: Iterable[str]) -> Optional[str]:
    """The prefix of the first ViT among ``names`` (see :func:`vit_prefixes`), or None."""
    prefixes = vit_prefixes(names)
    return prefixes[0] if prefixes else None

"""What a checkpoint load did: loaded / missing / unexpected / resized / ignored keys."""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

Shape = tuple[int, ...]


def compact_keys(keys: Iterable[str]) -> str:
    """Short description of a group of keys: ``decoder_* (24 keys)``, ``blocks.*.attn.rel_pos_h
    (12 keys)``, or the key itself."""
    keys = list(keys)
    if len(keys) == 1:
        return keys[0]
    patterns = list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", k) for k in keys))
    parts = [p.split(".") for p in patterns]
    shared = [names[0] for names in itertools.takewhile(lambda n: len(set(n)) == 1, zip(*parts))]
    while shared and shared[-1] == "*":
        shared.pop()
    if len(patterns) <= 3:
        text = ", ".join(patterns)
    elif shared:
        text = ".".join(shared) + ".*"
    else:
        heads = list(dict.fromkeys(p[0] for p in parts))
        common = os.path.commonprefix(heads)
        if len(common) >= 3:
            text = common.rstrip("._") + ("_*" if common.endswith("_") else "*")
        else:
            text = ", ".join(h + ".*" for h in heads[:4]) + (", ..." if len(heads) > 4 else "")
    return f"{text} ({len(keys)} keys)"


def _group(pairs: Iterable[tuple[str, Any]]) -> dict[Any, list[str]]:
    groups: dict[Any, list[str]] = {}
    for key, value in pairs:
        groups.setdefault(value, []).append(key)
    return groups


@dataclass
class LoadReport(Mapping):
    """Account of one :func:`~mae_transfer.checkpoints.load_pretrained` call.

    Dict-like over ``loaded`` (model keys set from the checkpoint), ``missing`` (model keys the
    checkpoint did not provide), ``unexpected`` (converted checkpoint keys the model lacks),
    ``resized`` (model key -> (checkpoint shape, model shape)) and ``ignored`` (checkpoint key ->
    reason). ``explained`` gives the reason for missing keys that are expected to be missing
    (e.g. zero-initialised relative position tables for an MAE checkpoint).
    """

    source: str
    layout: str
    description: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    explained: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    _FIELDS = ("loaded", "missing", "unexpected", "resized", "ignored")

    def __getitem__(self, name: str) -> Any:
        if name not in self._FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._FIELDS)

    def __len__(self) -> int:
        return len(self._FIELDS)

    @property
    def unexplained(self) -> list[str]:
        """Missing keys without an explanation, then unexpected keys: what deserves a look."""
        return [k for k in self.missing if k not in self.explained] + list(self.unexpected)

    def summary(self) -> str:
        lines = [f"Loaded {self.source} (layout {self.layout}: {self.description})",
                 f"  loaded: {len(self.loaded)} tensors"]
        for (old, new), keys in _group((k, v) for k, v in self.resized.items()).items():
            lines.append(f"  resized: {compact_keys(keys)} {old} -> {new}")
        for reason, keys in _group(self.ignored.items()).items():
            lines.append(f"  ignored: {compact_keys(keys)}: {reason}")
        for reason, keys in _group((k, self.explained[k]) for k in self.missing if k in self.explained).items():
            lines.append(f"  missing (expected): {compact_keys(keys)}: {reason}")
        unexplained_missing = [k for k in self.missing if k not in self.explained]
        if unexplained_missing:
            lines.append(f"  missing (NOT in checkpoint, left at init): {compact_keys(unexplained_missing)}: "
                         + ", ".join(unexplained_missing[:5]))
        if self.unexpected:
            lines.append(f"  unexpected (not in model, unused): {compact_keys(self.unexpected)}: "
                         + ", ".join(self.unexpected[:5]))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

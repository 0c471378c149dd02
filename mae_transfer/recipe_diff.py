"""Framework-free recipe comparison: every difference between this project's recipe and a reference's,
and which of them are listed deviations.

A :class:`Recipe` is what the framework modules (``mae_transfer.det.recipe``, ``mae_transfer.seg.recipe``)
extract from a built model, optimizer, schedule and data pipeline:

* ``tensors``: reference-named parameter -> ``{"shape", "lr_scale", "weight_decay", "init"}``;
* ``settings``: flat key -> JSON-like value (``"optimizer.betas"``, ``"train.augmentations"``, ...).

Deviations are listed in a YAML file beside the config (``configs/det/coco_vitb_mae.deviations.yaml``):
a list of ``{key, ours, reference, reason}``. ``key`` is a difference key as printed (a settings key, or
``tensors.<name>.<field>``), glob patterns allowed (``tensors.*.weight_decay``); ``ours`` and
``reference`` are the values the difference must have (omit one to accept any value for it); ``reason``
is required. A difference is accepted only when a deviation matches its key and values, so a listed
deviation cannot hide a different, later change.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from mae_transfer.errors import ConfigError

INIT_MIN_NUMEL = 256  # smaller random tensors give too noisy a std to compare
INIT_STD_RTOL = 0.2
LR_RTOL = 1e-9
# Tensors of the ViT that a pretrained checkpoint does not set (relative position tables, layer
# scale): their initialisation is part of the recipe, like that of everything outside the ViT.
NEW_IN_VIT = re.compile(r"rel_pos|relative_position|gamma")


@dataclass
class Recipe:
    name: str
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Difference:
    key: str
    ours: Any
    reference: Any
    reason: str | None = None  # set when a listed deviation accepts it

    def line(self) -> str:
        tail = f"  [deviation: {self.reason}]" if self.reason else "  [NOT LISTED]"
        return f"{self.key}: ours={_show(self.ours)} reference={_show(self.reference)}{tail}"


@dataclass
class Deviation:
    key: str
    reason: str
    ours: Any = None
    reference: Any = None
    has_ours: bool = False
    has_reference: bool = False

    def accepts(self, diff: Difference) -> bool:
        return (
            fnmatch(diff.key, self.key)
            and (not self.has_ours or _equal(_plain(self.ours), _plain(diff.ours)))
            and (not self.has_reference or _equal(_plain(self.reference), _plain(diff.reference)))
        )


def is_new_parameter(name: str, vit_prefix: str) -> bool:
    """Whether a (reference-named) parameter is left to its initialisation by a ViT checkpoint."""
    return not name.startswith(vit_prefix) or bool(NEW_IN_VIT.search(name))


def init_signature(param: torch.Tensor) -> Any:
    """How a freshly built tensor is initialised: ``"zeros"``, ``"ones"``, ``"constant <v>"``,
    ``{"std": s}`` for random ones, or ``"random"`` when too small for a stable std."""
    data = param.detach().float().flatten()
    if data.numel() == 0:
        return "empty"
    first = float(data[0])
    if bool((data == first).all()):
        return "zeros" if first == 0 else "ones" if first == 1 else f"constant {first:.6g}"
    if data.numel() < INIT_MIN_NUMEL:
        return "random"
    return {"std": round(float(data.std()), 6)}


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:297] + "..."


def _plain(value: Any) -> Any:
    """Tuples as lists and dict keys as strings, so YAML values compare with extracted ones."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _equal(a: Any, b: Any, rtol: float = LR_RTOL) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-15)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], rtol) for k in a)
    return a == b


def _init_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return math.isclose(a["std"], b["std"], rel_tol=INIT_STD_RTOL)
    return a == b


def diff_tensors(ours: dict, reference: dict) -> list[Difference]:
    diffs = []
    for name in sorted(ours.keys() | reference.keys()):
        a, b = ours.get(name), reference.get(name)
        if a is None or b is None:
            diffs.append(Difference(f"tensors.{name}", a and a["shape"], b and b["shape"]))
            continue
        for key in ("shape", "lr_scale", "weight_decay"):
            if not _equal(a[key], b[key]):
                diffs.append(Difference(f"tensors.{name}.{key}", a[key], b[key]))
        if a.get("init") is not None and b.get("init") is not None and not _init_equal(a["init"], b["init"]):
            diffs.append(Difference(f"tensors.{name}.init", a["init"], b["init"]))
    return diffs


def diff_settings(ours: dict, reference: dict) -> list[Difference]:
    return [
        Difference(key, ours.get(key, "<absent>"), reference.get(key, "<absent>"))
        for key in sorted(ours.keys() | reference.keys())
        if not _equal(ours.get(key, "<absent>"), reference.get(key, "<absent>"))
    ]


def diff_recipes(ours: Recipe, reference: Recipe) -> list[Difference]:
    return diff_settings(ours.settings, reference.settings) + diff_tensors(ours.tensors, reference.tensors)


def deviations_path(config_path: Path) -> Path:
    """``configs/det/coco_vitb_mae.yaml`` -> ``configs/det/coco_vitb_mae.deviations.yaml``."""
    return config_path.with_name(f"{config_path.stem}.deviations.yaml")


def load_deviations(path: Path) -> list[Deviation]:
    """The deviations listed beside a config (none when the file does not exist)."""
    if not path.is_file():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path} must be a YAML list of {{key, ours, reference, reason}}; fix its top level.")
    deviations = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("key") or not entry.get("reason"):
            raise ConfigError(f"{path}: entry {i + 1} needs a 'key' and a 'reason'; add them.")
        unknown = set(entry) - {"key", "ours", "reference", "reason"}
        if unknown:
            raise ConfigError(f"{path}: entry {i + 1} has unknown fields {sorted(unknown)}; "
                              "use key, ours, reference, reason.")
        deviations.append(Deviation(key=entry["key"], reason=entry["reason"], ours=entry.get("ours"),
                                    reference=entry.get("reference"), has_ours="ours" in entry,
                                    has_reference="reference" in entry))
    return deviations


def apply_deviations(diffs: Iterable[Difference],
                     deviations: list[Deviation]) -> tuple[list[Difference], list[Deviation]]:
    """Mark the differences a deviation accepts; also return the deviations that matched nothing."""
    diffs, used = list(diffs), set()
    for diff in diffs:
        for i, deviation in enumerate(deviations):
            if deviation.accepts(diff):
                diff.reason, _ = deviation.reason, used.add(i)
                break
    return diffs, [d for i, d in enumerate(deviations) if i not in used]


def report(ours: Recipe, reference: Recipe, diffs: list[Difference], stale: list[Deviation]) -> str:
    """The printed comparison; the last line is the verdict."""
    unlisted = [d for d in diffs if d.reason is None]
    lines = [f"ours:      {ours.name} ({len(ours.tensors)} tensors, {len(ours.settings)} settings)",
             f"reference: {reference.name} ({len(reference.tensors)} tensors, {len(reference.settings)} settings)"]
    lines += [d.line() for d in diffs]
    lines += [f"stale deviation (matches no difference): {d.key}: {d.reason}" for d in stale]
    verdict = "IDENTICAL apart from listed deviations" if not unlisted else f"{len(unlisted)} UNLISTED differences"
    lines.append(f"{len(diffs)} differences, {len(diffs) - len(unlisted)} listed as deviations: {verdict}")
    return "\n".join(lines)

"""Partial fine-tuning: which parameters of a detector/segmentor train, the same in both frameworks.

Policies (a string such as ``"last_k_blocks:4"`` or a one-key dict such as ``{"last_k_blocks": 4}``):

* ``full``: nothing is frozen (the default).
* ``last_k_blocks:K``: the ViT's patch embedding, cls token, position embeddings and every block
  before the last K are frozen, i.e. every backbone parameter whose layer id (see
  :mod:`mae_transfer.optim.layer_decay`) is <= depth - K (MAE paper Fig. 9). The ViT's final
  norm, if it has one, sits after the last block (layer id depth + 1) and trains with the heads.
* ``frozen_backbone``: the whole ViT is frozen; the pyramid (neck) and the heads train.
* ``linear_probe``: the ViT and the pyramid are frozen; only the task heads train (RPN and ROI
  heads in Detectron2, decode/auxiliary heads in MMSeg). There is no single linear layer in a
  detector, so this is the dense-prediction analogue of MAE's linear probing.

Policies only ever freeze; they never re-enable a parameter another component froze.

Frozen modules are kept in eval mode (drop path and dropout off, BatchNorm statistics fixed):
:func:`apply_freeze` registers a forward pre-hook on every largest fully-frozen submodule that
switches it back to eval mode right before it runs. The hook does not depend on who calls
``model.train()``, so it works unchanged under Detectron2's trainer, MMEngine's Runner and DDP.
Apply the policy before the model is wrapped in DistributedDataParallel (Detectron2's trainer
builds the optimizer, which applies it, before wrapping; see ``mae_transfer.seg.optimizer`` for MMSeg).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from torch import nn

from mae_transfer.errors import ConfigError

from .layer_decay import infer_num_layers, layer_id_of, resolve_prefix

POLICY_NAMES = ("full", "last_k_blocks", "frozen_backbone", "linear_probe")
_VALID = "'full', 'last_k_blocks:K' (e.g. 'last_k_blocks:4'), 'frozen_backbone', 'linear_probe'"


@dataclass(frozen=True)
class FreezePolicy:
    """A parsed freeze policy: ``kind`` in :data:`POLICY_NAMES`, ``k`` for ``last_k_blocks``."""

    kind: str = "full"
    k: int | None = None

    @classmethod
    def parse(cls, spec: Union[str, Mapping, "FreezePolicy", None]) -> "FreezePolicy":
        """Parse ``"last_k_blocks:4"``, ``{"last_k_blocks": 4}``, ``"full"``, None (= full)..."""
        if isinstance(spec, FreezePolicy):
            return spec
        if spec is None or spec == "":
            return cls()
        if isinstance(spec, Mapping):
            if len(spec) != 1:
                raise ConfigError(f"Freeze policy {dict(spec)!r} must have exactly one key, one of {_VALID}.")
            (kind, value), = spec.items()
        elif isinstance(spec, str):
            kind, _, value = (part.strip() for part in spec.partition(":"))
        else:
            raise TypeError(f"Freeze policy must be a str or a dict, got {type(spec).__name__}: {spec!r}.")
        kind = str(kind).strip().lower()
        if kind not in POLICY_NAMES:
            raise ConfigError(f"Unknown freeze policy {spec!r}; valid policies are {_VALID}.")
        if kind != "last_k_blocks":
            return cls(kind)
        try:
            k = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Freeze policy {spec!r} needs an integer K >= 0, e.g. 'last_k_blocks:4'.") from None
        if k < 0:
            raise ConfigError(f"Freeze policy {spec!r}: K must be >= 0.")
        return cls(kind, k)

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}" if self.kind == "last_k_blocks" else self.kind


def frozen_parameter_names(
    names: Iterable[str],
    policy: Union[str, Mapping, FreezePolicy, None],
    backbone_prefix: str | None = None,
    neck_prefix: str | None = None,
) -> list[str]:
    """Names (from ``names``) that ``policy`` freezes; pure, no model needed.

    Args:
        names: parameter names of the whole model.
        policy: see the module docstring.
        backbone_prefix: path of the ViT with a trailing dot (``"backbone.net."`` in Detectron2);
            None (default): found from the names (:mod:`mae_transfer.models.naming`).
        neck_prefix: path of the pyramid, frozen by ``linear_probe`` (``"backbone."`` in
            Detectron2, where the pyramid wraps the ViT; ``"neck."`` in MMSeg). None: no neck.
    """
    policy = FreezePolicy.parse(policy)
    names = list(names)
    if policy.kind == "full":
        return []
    backbone_prefix = resolve_prefix(names, backbone_prefix)
    in_backbone = [n for n in names if n.startswith(backbone_prefix)]
    if policy.kind == "frozen_backbone":
        return in_backbone
    if policy.kind == "linear_probe":
        return [n for n in names if n.startswith(backbone_prefix) or (neck_prefix and n.startswith(neck_prefix))]
    depth = infer_num_layers(in_backbone, backbone_prefix)
    if policy.k > depth:
        raise ConfigError(f"Freeze policy '{policy}' asks for more blocks than the ViT has ({depth}).")
    return [n for n in in_backbone if layer_id_of(n, depth, backbone_prefix) <= depth - policy.k]


def apply_freeze(
    model: nn.Module,
    policy: Union[str, Mapping, FreezePolicy, None],
    backbone_prefix: str | None = None,
    neck_prefix: str | None = None,
) -> list[str]:
    """Freeze what ``policy`` says (``requires_grad=False``) and keep frozen modules in eval mode.

    Idempotent. Arguments as in :func:`frozen_parameter_names`. Returns the frozen names.
    """
    params = dict(model.named_parameters())
    frozen = frozen_parameter_names(params, policy, backbone_prefix, neck_prefix)
    for name in frozen:
        params[name].requires_grad_(False)
    for module in _largest_frozen_modules(model):
        module.eval()
        if _keep_eval not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def _keep_eval(module: nn.Module, args) -> None:
    """Forward pre-hook: a frozen module runs in eval mode even after ``model.train()``."""
    if module.training:
        module.eval()


def _largest_frozen_modules(module: nn.Module) -> list[nn.Module]:
    """Submodules that have parameters, all frozen, and whose parent is not fully frozen."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [m for child in module.children() for m in _largest_frozen_modules(child)]

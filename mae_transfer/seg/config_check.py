"""Config keys checked against the classes that read them, so that a misspelt key is an error that
names the closest right one instead of a TypeError deep inside the Runner (or a silently ignored key).

One rule for both places keys come from: :func:`check_overrides` (``--cfg-options``) and
:func:`check_component_keys` (the config files): a key of a component dict must be an argument of
the class its ``type`` names (:func:`constructor_args`).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterator, Mapping

from mmengine.config import Config
from mmengine.runner import LogProcessor, Runner
from mmseg import registry as r
from torch.utils.data import DataLoader

from mae_transfer.errors import ConfigError, UserError

from .optimizer import PARAMWISE_KEYS

# Top-level keys the Runner understands even when a config does not set them.
RUNNER_KEYS = set(inspect.signature(Runner.__init__).parameters) | {
    "launcher", "runner_type", "custom_imports", "find_unused_parameters", "sync_bn",
    "auto_scale_lr", "unsafe_load", "model_wrapper_cfg", "resume", "load_from", "work_dir"}


def registered_class(type_name: Any) -> type | None:
    """The class a component's ``type`` names in MMSeg's registries (or ``type`` itself when it is a
    class); None when no registry knows it."""
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    for registry in (r.MODELS, r.DATASETS, r.TRANSFORMS, r.HOOKS, r.OPTIMIZERS, r.OPTIM_WRAPPERS, r.PARAM_SCHEDULERS,
                     r.LOOPS, r.METRICS, r.DATA_SAMPLERS, r.VISUALIZERS, r.VISBACKENDS, r.LOG_PROCESSORS):
        cls = registry.get(type_name)
        if cls is not None:
            return cls
    return None


def constructor_args(cls: type) -> tuple[set[str], bool]:
    """Keyword arguments accepted by ``cls`` (following ``**kwargs`` up the MRO); open-ended flag.

    A class that forwards ``**kwargs`` elsewhere declares its keys with a ``config_keys()`` classmethod.
    """
    if hasattr(cls, "config_keys"):
        return set(cls.config_keys()), False
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}, False
    return names - {"self"}, True


def _typeless_keys(path: str, parent: Mapping | None) -> set[str]:
    """Keys of the Runner's dicts that carry no ``type`` (their consumers' arguments)."""
    if path.endswith("_dataloader"):
        return set(inspect.signature(DataLoader.__init__).parameters) - {"self"} | {"sampler", "dataset"}
    if path == "optim_wrapper.paramwise_cfg" and (parent or {}).get("constructor") == "MAETransferOptimizerConstructor":
        return set(PARAMWISE_KEYS)
    return {
        "randomness": {"seed", "deterministic", "diff_rank_seed"},
        "env_cfg": {"cudnn_benchmark", "mp_cfg", "dist_cfg", "resource_limit"},
        "auto_scale_lr": {"enable", "base_batch_size"},
        "log_processor": set(inspect.signature(LogProcessor.__init__).parameters) - {"self"},
    }.get(path, set())


def _known_keys(node: Mapping, path: str, parent: Mapping | None) -> tuple[set[str], bool]:
    keys = set(node)
    if not path:
        return keys | RUNNER_KEYS, False
    if path == "optim_wrapper":
        keys |= {"constructor", "paramwise_cfg"}  # read by the optimizer-wrapper builder
    if "type" not in node:
        return keys | _typeless_keys(path, parent), False
    cls = registered_class(node.get("type"))
    if cls is None:
        return keys, "type" in node  # an unregistered type: cannot tell, accept
    accepted, open_ended = constructor_args(cls)
    return keys | accepted, open_ended


def check_overrides(cfg: Config, options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first override key that neither exists in ``cfg``
    nor is an argument of the component it configures (with the closest existing key)."""
    for dotted in options:
        node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
        parent = None
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the top level"
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--cfg-options key '{dotted}': {where} is a list of {len(node)}; "
                                      f"'{part}' is not a valid index.")
                node = node[int(part)]
                continue
            if not isinstance(node, Mapping):
                break  # replacing a scalar by a dict/value below it: the value decides
            known, open_ended = _known_keys(node, ".".join(parts[:depth]), parent)
            if part not in known and not open_ended:
                close = difflib.get_close_matches(part, sorted(known), n=1)
                hint = f"did you mean '{'.'.join(parts[:depth] + close)}'?" if close else \
                    "check the spelling against the config file."
                raise ConfigError(f"Unknown --cfg-options key '{dotted}': '{part}' is not a key of {where}; {hint}")
            if part not in node:
                break
            parent, node = node, node[part]


# Keys MMEngine reads from a component dict itself, before the class is built.
_CONSUMED_BEFORE_BUILD = {"optim_wrapper": {"paramwise_cfg", "constructor"}}


def _components(node: Any, path: str) -> Iterator[tuple[str, Mapping]]:
    """(dotted path, dict) of every dict with a ``type`` in a config tree."""
    if isinstance(node, Mapping):
        if "type" in node:
            yield path, node
        for key, value in node.items():
            yield from _components(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _components(value, f"{path}.{index}")


def check_component_keys(cfg: Config) -> None:
    """Every key of a component in the config is an argument of its class (misspellings in config
    files would otherwise surface as a TypeError deep inside the Runner, or be silently ignored)."""
    for path, node in _components(cfg._cfg_dict.to_dict(), ""):
        cls = registered_class(node.get("type"))
        if cls is None or path.rsplit(".", 1)[-1].endswith("_cfg"):
            continue  # norm_cfg/act_cfg/init_cfg... are read by mmcv's builders, which take extra keys
        accepted, open_ended = constructor_args(cls)
        if open_ended:
            continue
        accepted |= {"type", "_scope_"} | _CONSUMED_BEFORE_BUILD.get(path, set())
        for key in node:
            if key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hint = (f"did you mean '{close[0]}'?" if close
                        else f"{cls.__name__} accepts {', '.join(sorted(accepted))}.")
                raise UserError(f"Unknown key '{key}' in {path} ({cls.__name__}) of config {cfg.filename}; {hint}")

"""Show what the optimizer of a config does to each layer: lr scale, lr, weight decay, frozen.

    mae-inspect-param-groups --config coco_vitb_mae            # configs/det/*.yaml
    mae-inspect-param-groups --config ade20k_vitb_mae_last4    # configs/seg/*.py
    mae-inspect-param-groups --config my.yaml --json params.json

The model is built on the "meta" device (no memory, no weights loaded), the config's freeze policy
is applied and the same layer-decay rule as in training (``mae_transfer.optim``) is evaluated; the
header names the config's weight-decay rule (``vitdet``, ``beit`` or ``mae``).
``--json`` writes one record per parameter: name, shape, layer_id, lr_scale, weight_decay, trainable.
(``python tools/inspect_param_groups.py`` and ``python -m mae_transfer.cli.inspect_param_groups`` are
the same command.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from mae_transfer.configs import framework_of
from mae_transfer.errors import ConfigError, UserError, report_errors
from mae_transfer.optim import param_settings
from mae_transfer.optim.summary import layer_table


def _on_meta(build: Callable[[str], torch.nn.Module]) -> torch.nn.Module:
    """Build on the meta device (instant, no memory); fall back to the CPU for code that needs data."""
    try:
        with torch.device("meta"):
            return build("meta")
    except (NotImplementedError, RuntimeError):
        return build("cpu")


def det_settings(config: str) -> tuple[list[dict], float, str]:
    from mae_transfer.det import build_model, load_config
    from mae_transfer.det.optimizer import apply_cfg_freeze, layer_decay_kwargs

    cfg = load_config(config, ["MODEL.VIT.WEIGHTS", ""])
    model = _on_meta(lambda device: build_model(cfg, device=device))
    apply_cfg_freeze(cfg, model)
    kwargs = layer_decay_kwargs(cfg, model)
    records = param_settings(model, **kwargs)
    summary = (f"freeze {cfg.MODEL.VIT.FREEZE}, layer decay {cfg.SOLVER.LAYER_DECAY}, "
               f"weight-decay rule {kwargs['weight_decay_rule']}")
    return records, cfg.SOLVER.BASE_LR, summary


def seg_settings(config: str) -> tuple[list[dict], float, str]:
    from mae_transfer.seg import build_segmentor
    from mae_transfer.seg.config import load_config
    from mae_transfer.seg.optimizer import apply_paramwise_freeze, layer_decay_kwargs

    cfg = load_config(config)
    model = _on_meta(lambda device: build_segmentor(cfg))
    optimizer_cfg = cfg.optim_wrapper.optimizer
    paramwise = cfg.optim_wrapper.get("paramwise_cfg") or {}
    apply_paramwise_freeze(model, paramwise)
    kwargs = layer_decay_kwargs(model, optimizer_cfg, paramwise)
    records = param_settings(model, **kwargs)
    summary = (f"freeze {paramwise.get('freeze', 'full')}, layer decay {paramwise.get('layer_decay_rate', 1.0)}, "
               f"weight-decay rule {kwargs['weight_decay_rule']}")
    return records, optimizer_cfg["lr"], summary


@report_errors("inspect_param_groups")
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="det .yaml or seg .py config, or a bare name in configs/")
    parser.add_argument("--json", metavar="FILE", help="write one record per parameter to this file")
    args = parser.parse_args(argv)

    framework = framework_of(args.config)
    try:
        records, base_lr, summary = (det_settings if framework == "det" else seg_settings)(args.config)
    except UserError:
        raise
    except ValueError as error:  # a config value the model builders reject
        raise ConfigError(f"{args.config}: {error}") from None
    print(f"{args.config} ({'Detectron2' if framework == 'det' else 'MMSegmentation'}): "
          f"base lr {base_lr:g}, {summary}")
    print(layer_table(records, base_lr))
    if args.json:
        lines = (json.dumps({**r, "shape": list(r["shape"])}) for r in records)
        Path(args.json).write_text("[\n" + ",\n".join(lines) + "\n]\n")
        print(f"wrote {len(records)} parameter records to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

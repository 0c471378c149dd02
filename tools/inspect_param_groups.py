#!/usr/bin/env python
"""Show what the optimizer of a config does to each layer: lr scale, lr, weight decay, frozen.

    python tools/inspect_param_groups.py --config coco_vitb_mae            # configs/det/*.yaml
    python tools/inspect_param_groups.py --config ade20k_vitb_mae_last4    # configs/seg/*.py
    python tools/inspect_param_groups.py --config my.yaml --json params.json

The model is built on the "meta" device (no memory, no weights loaded), the config's freeze policy
is applied and the same layer-decay rule as in training (``mae_transfer.optim``) is evaluated; the
header names the config's weight-decay rule (``vitdet``, ``beit`` or ``mae``).
``--json`` writes one record per parameter: name, shape, layer_id, lr_scale, weight_decay, trainable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mae_transfer.optim import param_settings  # noqa: E402
from mae_transfer.optim.summary import layer_table  # noqa: E402


def framework_of(config: str) -> str:
    """"det" for Detectron2 yaml configs, "seg" for MMSeg python configs (bare names looked up)."""
    suffix = Path(config).suffix
    if suffix in (".yaml", ".yml"):
        return "det"
    if suffix == ".py":
        return "seg"
    det = (ROOT / "configs" / "det" / f"{config}.yaml").is_file()
    seg = (ROOT / "configs" / "seg" / f"{config}.py").is_file()
    if det == seg:
        where = "both configs/det and configs/seg" if det else "neither configs/det nor configs/seg"
        raise SystemExit(f"inspect_param_groups.py: error: config '{config}' is in {where}; pass a path.")
    return "det" if det else "seg"


def _on_meta(build):
    """Build on the meta device (instant, no memory); fall back to the CPU for code that needs data."""
    try:
        with torch.device("meta"):
            return build("meta")
    except (NotImplementedError, RuntimeError):
        return build("cpu")


def det_settings(config: str) -> tuple[list[dict], float, str]:
    from detectron2.modeling import build_model

    from mae_transfer.det import load_config
    from mae_transfer.det.optimizer import apply_cfg_freeze, layer_decay_kwargs

    cfg = load_config(config)
    cfg.MODEL.VIT.WEIGHTS = ""

    def build(device: str):
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        return build_model(cfg)

    model = _on_meta(build)
    apply_cfg_freeze(cfg, model)
    kwargs = layer_decay_kwargs(cfg, model)
    records = param_settings(model, **kwargs)
    summary = (f"freeze {cfg.MODEL.VIT.FREEZE}, layer decay {cfg.SOLVER.LAYER_DECAY}, "
               f"weight-decay rule {kwargs['weight_decay_rule']}")
    return records, cfg.SOLVER.BASE_LR, summary


def seg_settings(config: str) -> tuple[list[dict], float, str]:
    import mae_transfer.seg  # noqa: F401  (registers the models; installs the mmcv.ops stand-in first)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mae_transfer.seg.config import load_config
    from mae_transfer.seg.optimizer import apply_paramwise_freeze, layer_decay_kwargs

    cfg = load_config(config)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = _on_meta(lambda device: MODELS.build(cfg.model))
    optimizer_cfg = cfg.optim_wrapper.optimizer
    paramwise = cfg.optim_wrapper.get("paramwise_cfg") or {}
    apply_paramwise_freeze(model, paramwise)
    kwargs = layer_decay_kwargs(model, optimizer_cfg, paramwise)
    records = param_settings(model, **kwargs)
    summary = (f"freeze {paramwise.get('freeze', 'full')}, layer decay {paramwise.get('layer_decay_rate', 1.0)}, "
               f"weight-decay rule {kwargs['weight_decay_rule']}")
    return records, optimizer_cfg["lr"], summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="det .yaml or seg .py config, or a bare name in configs/")
    parser.add_argument("--json", metavar="FILE", help="write one record per parameter to this file")
    args = parser.parse_args(argv)

    framework = framework_of(args.config)
    try:
        records, base_lr, summary = (det_settings if framework == "det" else seg_settings)(args.config)
    except ValueError as error:  # config errors (unknown key, bad freeze policy, ...) are one sentence
        print(f"inspect_param_groups.py: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.config} ({'Detectron2' if framework == 'det' else 'MMSegmentation'}): "
          f"base lr {base_lr:g}, {summary}")
    print(layer_table(records, base_lr))
    if args.json:
        lines = (json.dumps({**r, "shape": list(r["shape"])}) for r in records)
        Path(args.json).write_text("[\n" + ",\n".join(lines) + "\n]\n")
        print(f"wrote {len(records)} parameter records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare a shipped recipe with the reference implementation that produced its published numbers.

    python tools/diff_recipe.py coco_vitb_mae            # vs Detectron2 ViTDet mask_rcnn_vitdet_b_100ep
    python tools/diff_recipe.py ade20k_vitb_mae          # vs MMSeg mae-base_upernet_8xb2-amp-160k
    python tools/diff_recipe.py coco_vitb_mae --reference COCO/mask_rcnn_vitdet_l_100ep.py
    python tools/diff_recipe.py coco_vitb_mae --override SOLVER.BASE_LR 2e-4   # what would change

Both sides are built with their own code (model on the CPU, optimizer, lr schedule, data pipeline,
test settings) and every difference is printed: tensor set and shapes, lr scale and weight decay per
tensor, initialisation of parameters no checkpoint sets, the lr multiplier at sampled iterations,
optimizer settings, augmentations, input format and normalisation, padding, test-time settings,
precision, batch, iterations, drop path. Differences listed with a reason in
``CONFIG.deviations.yaml`` beside the config are accepted (format: mae_transfer/recipe_diff.py).

Exit status: 0 = identical apart from listed deviations, 1 = unlisted differences, 2 = usage error.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

from mae_transfer.configs import framework_of
from mae_transfer.errors import ConfigError, report_errors
from mae_transfer.recipe_diff import apply_deviations, deviations_path, diff_recipes, load_deviations, report

PROG = "diff_recipe"


def _default_reference(references: dict[str, str], config: str) -> str:
    stem = Path(config).stem
    if stem not in references:
        raise ConfigError(
            f"Config '{config}' has no default reference (known: {', '.join(sorted(references))}); "
            "pass --reference with the reference config."
        )
    return references[stem]


def _literal(text: str):
    """A Python literal (``2e-4``, ``(512, 512)``, ``True``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_recipes(config: str, reference: str | None, overrides: list[list[str]]):
    """(ours, reference, path of the config) for a Detectron2 or MMSeg config."""
    if framework_of(config) == "det":
        from mae_transfer.det import recipe
        from mae_transfer.det.config import resolve_config_path

        ours = recipe.ours(config, [item for pair in overrides for item in pair])
        ref = recipe.reference(reference or _default_reference(recipe.REFERENCES, config), ours)
        return ours, ref, resolve_config_path(config)
    from mae_transfer.seg import recipe
    from mae_transfer.seg.config import resolve_config

    options = {key: _literal(value) for key, value in overrides}
    ours = recipe.ours(config, options)
    ref = recipe.reference(reference or _default_reference(recipe.REFERENCES, config))
    return ours, ref, resolve_config(config)


@report_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="det .yaml or seg .py config, or a bare name in configs/")
    parser.add_argument("--reference",
                        help="reference config: a ViTDet LazyConfig relative to projects/ViTDet/configs, or an "
                             "MMSeg config relative to mmseg/.mim/configs (default: the config's own)")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="change our config before comparing (yacs KEY VALUE, or an MMEngine dotted key "
                             "and a Python literal)")
    parser.add_argument("--deviations", type=Path, help="deviations file (default: CONFIG.deviations.yaml beside it)")
    args = parser.parse_args(argv)
    ours, ref, config_path = build_recipes(args.config, args.reference, args.override)
    deviations = load_deviations(args.deviations or deviations_path(config_path))
    diffs, stale = apply_deviations(diff_recipes(ours, ref), deviations)
    print(report(ours, ref, diffs, stale))
    return 0 if all(d.reason for d in diffs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

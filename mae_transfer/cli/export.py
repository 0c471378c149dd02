"""Export a trained run's model to TorchScript or ONNX at a fixed input size, checked against eager.

    python tools/export.py --run output/demo_det --format torchscript --out det_backbone.pt
    python tools/export.py --run output/demo_det --part model --format torchscript --out maskrcnn.pt
    python tools/export.py --run work_dirs/demo_vit_tiny --format onnx --out upernet.onnx --size 512 512

Parts: ``backbone`` (detection default: ViT + pyramid -> p2..p6; segmentation: backbone + neck) and
``model`` (segmentation default: the whole segmentor -> logits; detection: the whole Mask R-CNN via
Detectron2's TracingAdapter, batch 1, outputs before resizing to the original image). Every
exported module takes a (B, 3, H, W) float32 RGB 0..255 batch at the export size and normalises it
itself. After writing, the exported module is run on the example input and compared with the eager
model (ONNX needs the 'onnx' package; the check needs 'onnxruntime').
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mae_transfer.errors import report_errors

TOLERANCE = 1e-4  # largest difference to eager, relative to max(1, |eager output|)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="DIR", help="a detection OUTPUT_DIR or segmentation work dir")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    parser.add_argument("--out", required=True, metavar="FILE", help="the exported file (.pt / .onnx)")
    parser.add_argument("--part", choices=["backbone", "model"], default=None,
                        help="default: backbone (+ pyramid) for detection, the whole model for segmentation")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size (default: the detector's padded square / the segmentation crop)")
    parser.add_argument("--image", metavar="FILE", help="example input (resized to the size); default: noise")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow checkpoints that run code when unpickled (trusted files only)")
    return parser


def export_run(args: argparse.Namespace) -> tuple[str, float | None, str]:
    """Build the run's model, export the part; returns (what, difference to eager or None, note)."""
    from mae_transfer.inference import Predictor, read_image
    from mae_transfer.inference.export import default_size, export, exportable, require_onnx

    if args.format == "onnx":
        require_onnx()  # before minutes of model building
    image = read_image(args.image) if args.image else None
    predictor = Predictor.from_run(args.run, args.device, unsafe_load=args.unsafe_load)
    part = args.part or ("backbone" if predictor.task == "det" else "model")
    size = tuple(args.size) if args.size else default_size(predictor)
    item = exportable(predictor, part, size, image)
    difference = export(item, args.format, args.out)
    return f"{predictor.task} {part} at {size[0]}x{size[1]}", difference, item.note


@report_errors("export")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    what, difference, note = export_run(args)
    extra = f" ({note})" if note else ""
    if difference is None:
        print(f"exported {what} to {args.out}{extra}; not checked against eager (install onnxruntime to check).")
        return 0
    print(f"exported {what} to {args.out}{extra}; largest difference to eager: {difference:.2e}")
    if difference > TOLERANCE:
        print(f"export: error: the exported module differs from eager by {difference:.2e} (> {TOLERANCE}); "
              "do not use it, and report the config.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

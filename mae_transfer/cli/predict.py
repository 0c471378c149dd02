"""Apply a trained detection or segmentation run to images: overlay PNGs and a predictions file.

    python tools/predict.py --run output/demo_det photo.jpg more_photos/ --out predictions/
    python tools/predict.py --run work_dirs/demo_vit_tiny street.png --out seg_out --device cuda

Detection writes ``<image>.png`` (masks, boxes, class names, scores), ``predictions.json`` (COCO
results format, RLE masks) and ``images.json`` (``COCO("images.json").loadRes("predictions.json")``).
Segmentation writes ``<image>.png`` (colour map with a legend beside the image),
``labels/<image>.png`` (pixel value = class id) and ``index.json``. The output folder appears only
when every image is done.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from mae_transfer.errors import report_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="a detection OUTPUT_DIR or segmentation work dir (its config and final/last weights)")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--score-thresh", type=float, default=0.5, metavar="S",
                        help="detection: keep detections scoring at least S (default 0.5); ignored for segmentation")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--classes", metavar="FILE",
                        help="text file with one class name per line, in class-id order (default: from the run)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow checkpoints that run code when unpickled (trusted files only)")
    return parser


def predict(args: argparse.Namespace) -> Path:
    """Check every input, load the run, write all outputs into a staged folder, then publish it."""
    from mae_transfer.errors import UserError
    from mae_transfer.inference import Predictor, collect_images, read_image
    from mae_transfer.inference.writers import DetectionWriter, SegmentationWriter, StagedFolder, unique_stem

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}.")
    paths = collect_images(args.images)
    for path in paths:  # an unreadable image stops the command before any work or output
        read_image(path)
    names = None
    if args.classes:
        from mae_transfer.seg.config import read_class_names

        names = read_class_names(args.classes)
    staged = StagedFolder(args.out)
    try:
        predictor = Predictor.from_run(args.run, args.device, score_thresh=args.score_thresh, class_names=names,
                                       unsafe_load=args.unsafe_load)
        engine = predictor.engine
        writer = (DetectionWriter(staged.path, engine.class_names, engine.category_ids) if predictor.task == "det"
                  else SegmentationWriter(staged.path, engine.class_names, engine.palette))
        taken: set[str] = set()
        with tqdm(total=len(paths), desc="predict", unit="image") as bar:
            for start in range(0, len(paths), args.batch_size):
                batch = paths[start:start + args.batch_size]
                images = [read_image(path) for path in batch]
                for path, image, result in zip(batch, images, predictor(images)):
                    writer.add(path, unique_stem(path, taken), image, result)
                bar.update(len(batch))
        writer.finish()
        return staged.commit()
    except BaseException:
        staged.discard()
        raise


@report_errors("predict")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = predict(args)
    print(f"predictions written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

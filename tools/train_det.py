#!/usr/bin/env python
"""Train / evaluate Mask R-CNN with a plain ViT backbone (Detectron2 ``train_net.py`` semantics).

    python tools/train_det.py --config coco_vitb_mae.yaml --num-gpus 8
    python tools/train_det.py --config demo_vit_tiny                       # CPU, built-in data
    python tools/train_det.py --config demo_vit_tiny --num-gpus 2          # CPU: 2 gloo processes
    python tools/train_det.py --config coco_vitb_mae --resume              # continue after a crash
    python tools/train_det.py --config coco_vitb_mae --eval-only --vis 8 MODEL.WEIGHTS output/model_final.pth
    python tools/train_det.py --config demo_vit_tiny --register-coco mine_train train.json images/ \
        DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "()"

Multi-machine: run on every machine with --num-machines M --machine-rank R --dist-url tcp://HOST0:PORT.
SOLVER.IMS_PER_BATCH is the total batch over all processes; see configs/det/Base-ViTDet-MaskRCNN.yaml
for scaling the learning rate with it.
"""
import sys

from mae_transfer.det.cli import run

if __name__ == "__main__":
    sys.exit(run())

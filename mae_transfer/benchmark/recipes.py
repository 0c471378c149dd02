"""Mask R-CNN and UperNet with ViT-B at the recipe resolutions, on synthetic inputs.

- ``det_vitb``: ``configs/det/coco_vitb_mae.yaml`` (ViTDet-B, LSJ 1024): one training step
  (forward, backward, AdamW step) on one 1024x1024 image with 8 instances, and inference on one
  1024x1024 image. Detectron2's model zoo (projects/ViTDet/README.md, 64 A100s, one image each):
  0.314 s/img training, 0.079 s/img inference, 10.9 GB training memory.
- ``seg_vitb``: ``configs/seg/ade20k_vitb_mae.py`` (UperNet): one ``train_step`` on 2 crops of
  512x512 (the recipe's 2 images per GPU), and slide inference (512 crops, stride 341) on one
  512x683 image, ADE20K's usual test size.

Random weights and inputs: the time of a step does not depend on them. ``--quick`` runs the same
code with ViT-Ti at 256 px (det) / 128 px (seg).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .measure import AMP_DTYPES, autocast

__all__ = ["det_recipe", "detector_steps", "seg_recipe"]

def _det_inputs(size: int, device: torch.device, num_instances: int = 8) -> List[Dict]:
    """One LSJ-sized training image with random boxes and box-shaped masks (Detectron2 format)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(num_instances, 2, generator=generator) * size * 0.7
    sides = 32 + torch.rand(num_instances, 2, generator=generator) * size * 0.25
    boxes = torch.cat([corners, corners + sides], dim=1).round()
    masks = torch.zeros(num_instances, size, size, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        mask[y0:y1, x0:x1] = True
    instances = Instances((size, size), gt_boxes=Boxes(boxes), gt_masks=BitMasks(masks),
                          gt_classes=torch.randint(0, 80, (num_instances,), generator=generator))
    image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
    return [{"image": image.to(device), "instances": instances.to(device), "height": size, "width": size}]


def detector_steps(model, optimizer, batch: List[Dict], device: torch.device, amp: Optional[str] = None):
    """``(train_step, infer)`` for a Detectron2 model: forward + backward + optimizer step on
    ``batch``, and inference on its first image. Call ``train_step`` inside an ``EventStorage``."""

    def train_step():
        model.train()
        with autocast(device, amp):
            loss = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer():
        model.eval()
        first = {key: batch[0][key] for key in ("image", "height", "width") if key in batch[0]}
        with torch.no_grad(), autocast(device, amp):
            model([first])

    return train_step, infer


def det_recipe(device: torch.device, quick: bool, amp: Optional[str], timed) -> List[Dict]:
    """Rows for ViTDet-B Mask R-CNN: train step per image and inference per image."""
    from detectron2.utils.events import EventStorage

    from mae_transfer.det import build_model, load_config
    from mae_transfer.det.optimizer import build_optimizer

    size = 128 if quick else 1024
    opts = ["MODEL.VIT.WEIGHTS", "", "MODEL.DEVICE", device.type, "MODEL.ROI_HEADS.NUM_CLASSES", 80]
    if quick:
        opts += ["MODEL.VIT.NAME", "vit_tiny_patch16", "MODEL.VIT.IMG_SIZE", size, "MODEL.PYRAMID.SQUARE_PAD", size,
                 "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100,
                 "MODEL.RPN.POST_NMS_TOPK_TEST", 100]  # the code paths, not the recipe's cost
    cfg = load_config("coco_vitb_mae", opts)
    model = build_model(cfg, device=device.type)
    optimizer = build_optimizer(cfg, model)
    train_step, infer = detector_steps(model, optimizer, _det_inputs(size, device), device, amp)
    with EventStorage(0):  # Detectron2's heads log into it during training
        step = timed(train_step)
    name = "ViTDet-B" if not quick else "ViTDet-Ti (quick)"
    return [
        {"task": "det", "case": f"Mask R-CNN {name} train step @{size}", "value": step, "unit": "s/img",
         "note": "1 image (the recipe's per-GPU batch); Detectron2 model zoo, A100: 0.314"},
        {"task": "det", "case": f"Mask R-CNN {name} inference @{size}", "value": timed(infer), "unit": "s/img",
         "note": "Detectron2 model zoo, A100: 0.079"},
    ]


def _seg_batch(size: tuple[int, int], count: int, num_classes: int) -> Dict:
    """MMSeg's ``train_step``/``test_step`` input: uint8 images and label maps (255 = ignore)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(0)
    height, width = size
    inputs, samples = [], []
    for _ in range(count):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, height, width), generator=generator)
        meta = dict(img_shape=size, ori_shape=size, pad_shape=size, padding_size=[0, 0, 0, 0])
        samples.append(SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label)))
    return {"inputs": inputs, "data_samples": samples}


def seg_recipe(device: torch.device, quick: bool, amp: Optional[str], timed) -> List[Dict]:
    """Rows for ViT-B UperNet: train step per batch of 2 crops and slide inference per image."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    from mae_transfer.seg import build_segmentor
    from mae_transfer.seg.config import load_config
    from mae_transfer.seg.runner import adapt_to_device

    crop = 128 if quick else 512
    options = {"model.backbone.pretrained": None}
    if quick:
        options.update({"model.backbone.arch": "vit_tiny_patch16", "model.backbone.img_size": crop,
                        "model.neck.in_channels": 192, "model.decode_head.in_channels": [192] * 4,
                        "model.decode_head.channels": 64, "model.auxiliary_head.in_channels": 192,
                        "model.test_cfg.crop_size": (crop, crop), "model.test_cfg.stride": (crop * 2 // 3,) * 2})
    cfg = load_config("ade20k_vitb_mae", options)
    adapt_to_device(cfg, cuda=False)  # one process: SyncBN -> BN on every device; AMP set below
    if amp:
        cfg.optim_wrapper.update(type="AmpOptimWrapper", dtype=AMP_DTYPES[amp])
    model = build_segmentor(cfg).to(device)
    with DefaultScope.overwrite_default_scope("mmseg"):
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    classes = cfg.model.decode_head.num_classes
    train_batch = _seg_batch((crop, crop), 2, classes)
    test_batch = _seg_batch((crop, crop * 4 // 3), 1, classes)

    def train_step():
        model.train()
        model.train_step(train_batch, optim_wrapper)

    def infer():
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            model.test_step(test_batch)

    step = timed(train_step)
    name = "ViT-B" if not quick else "ViT-Ti (quick)"
    return [
        {"task": "seg", "case": f"UperNet {name} train step @{crop}x{crop}", "value": step, "unit": "s/iter",
         "note": "batch 2 (the recipe's per-GPU batch)"},
        {"task": "seg", "case": f"UperNet {name} slide inference @{crop}x{crop * 4 // 3}", "value": timed(infer),
         "unit": "s/img", "note": f"crop {crop}, stride {crop * 2 // 3}"},
    ]

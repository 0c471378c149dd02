"""Supervised (object-crop classification) pretraining: crops, a short run, and a checkpoint in
timm's layout that timm's own ViT loads strictly and evaluates identically."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from pycocotools.coco import COCO

from mae_transfer.data import make_coco_instances
from mae_transfer.pretrain import SupPretrainConfig, pretrain_supervised
from mae_transfer.pretrain.common import IMAGENET_MEAN, IMAGENET_STD
from mae_transfer.pretrain.sup_trainer import ObjectCrops


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_instances(tmp_path_factory.mktemp("sup") / "data", num_images=12, image_size=(128, 128))


def test_crops_are_labelled_objects(coco):
    """Each eval crop is centred on its annotation and labelled with its category: the pixels of the
    object's mask (pycocotools, cropped and resized the same way) have the object's own colour
    (every object has its own random colour, so a crop of the wrong object would not match)."""
    json_path, image_dir = coco
    ref = COCO(str(json_path))
    anns = [a for a in ref.loadAnns(ref.getAnnIds()) if min(a["bbox"][2:]) >= 4]
    crops = ObjectCrops(json_path, image_dir, img_size=32, train=False)
    assert len(crops) == len(anns) == sum(min(a["bbox"][2:]) >= 4 for a in ref.dataset["annotations"])
    errors = []
    for i, ann in enumerate(anns):
        img, label = crops[i]
        assert img.shape == (3, 32, 32) and label == ann["category_id"] - 1
        rgb = img * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        x, y, w, h = ann["bbox"]
        side = 1.4 * max(w, h)
        box = tuple(int(round(v)) for v in (x + w / 2 - side / 2, y + h / 2 - side / 2,
                                            x + w / 2 + side / 2, y + h / 2 + side / 2))
        mask = Image.fromarray(ref.annToMask(ann) * 255).crop(box).resize((32, 32), Image.NEAREST)
        inside = np.asarray(mask) > 0
        if inside.sum() < 4:
            continue
        image = np.asarray(Image.open(image_dir / ref.loadImgs(ann["image_id"])[0]["file_name"]).convert("RGB"))
        own = image[ref.annToMask(ann).astype(bool)].mean(0)
        errors.append(np.abs(rgb.permute(1, 2, 0).numpy()[inside].mean(0) * 255 - own).max())
    assert len(errors) >= 0.9 * len(anns) and np.median(errors) < 10


def _colour_coded_coco(root) -> tuple:
    """12 images of 64 px, each with 3 axis-aligned squares whose class is their colour: a task the
    trainer must learn within a few iterations (the built-in data needs shape, far more steps)."""
    rng = np.random.default_rng(0)
    palette = np.array([(220, 50, 50), (50, 170, 60), (50, 90, 225)])
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for image_id in range(1, 13):
        pixels = np.full((64, 64, 3), 128, np.uint8)
        for k in range(3):
            side = int(rng.integers(12, 20))
            x, y = 2 + 20 * k, int(rng.integers(0, 64 - side))
            pixels[y:y + side, x:x + side] = palette[k]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": k + 1, "iscrowd": 0,
                         "bbox": [x, y, side, side], "area": side * side,
                         "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]]})
        Image.fromarray(pixels).save(root / "images" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 64, "width": 64})
    categories = [{"id": k + 1, "name": f"colour{k}"} for k in range(3)]
    (root / "train.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root / "train.json", root / "images"


def test_short_run_lowers_loss_and_timm_loads_checkpoint(tmp_path):
    json_path, image_dir = _colour_coded_coco(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = pretrain_supervised(SupPretrainConfig(
            json=str(json_path), images=str(image_dir), val_json=str(json_path), val_images=str(image_dir),
            output=str(tmp_path / "run"), iters=15, batch_size=12, img_size=48, drop_path=0.0, log_every=10))
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.mean(metrics["loss"][-5:]) < 0.8 * metrics["loss"][0]
    assert summary["val_acc"] > 0.5  # 3 classes: chance is 1/3

    ckpt = torch.load(tmp_path / "run" / "checkpoint-last.pth", map_location="cpu", weights_only=True)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=3).eval()
    ref.load_state_dict(ckpt["model"], strict=True)
    from mae_transfer.pretrain import create_classifier
    ours = create_classifier("vit_tiny_patch16", 3, img_size=48, pretrain_img_size=48).eval()
    ours.load_state_dict(ckpt["model"], strict=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)

    from mae_transfer.checkpoints import load_pretrained
    from mae_transfer.models import create_vit
    vitdet = create_vit("vit_tiny_patch16", img_size=96, window_size=3, rel_pos="decomposed",
                        use_cls_token=False, final_norm=False)
    report = load_pretrained(vitdet, tmp_path / "run" / "checkpoint-last.pth")
    assert report.layout == "timm_vit" and not report.unexplained and not report.unexpected
    assert "head.weight" in report.ignored
    assert torch.equal(vitdet.blocks[5].mlp.fc1.weight, ckpt["model"]["blocks.5.mlp.fc1.weight"])

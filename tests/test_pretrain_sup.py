"""Supervised (object-crop classification) pretraining: crops, a short run, and a checkpoint in
timm's layout that timm's own ViT loads strictly and evaluates identically."""
import json

import numpy as np
import pytest
import timm
import torch

from mae_transfer.data import make_coco_instances, shape_classes
from mae_transfer.pretrain import SupPretrainConfig, pretrain_supervised
from mae_transfer.pretrain.common import IMAGENET_MEAN, IMAGENET_STD
from mae_transfer.pretrain.sup_trainer import ObjectCrops


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_instances(tmp_path_factory.mktemp("sup") / "data", num_images=12, image_size=(128, 128))


def test_crops_are_labelled_objects(coco):
    json_path, image_dir = coco
    anns = json.loads(json_path.read_text())["annotations"]
    crops = ObjectCrops(json_path, image_dir, img_size=32, train=False)
    assert len(crops) == sum(min(a["bbox"][2:]) >= 4 for a in anns)
    colours = np.array([c.colour for c in shape_classes(3)], float)
    hits = 0
    for i in range(len(crops)):
        img, label = crops[i]
        assert img.shape == (3, 32, 32)
        rgb = img * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        pixels = rgb.permute(1, 2, 0).reshape(-1, 3).numpy() * 255
        saturated = pixels[pixels.max(1) - pixels.min(1) > 40]
        # the most frequent saturated hue in the crop is the labelled class' colour
        directions = saturated / np.linalg.norm(saturated, axis=1, keepdims=True)
        palette = colours / np.linalg.norm(colours, axis=1, keepdims=True)
        nearest = np.argmin(np.linalg.norm(directions[:, None] - palette[None], axis=2), axis=1)
        hits += np.bincount(nearest, minlength=3).argmax() == label
    assert hits >= 0.9 * len(crops)  # neighbours of another class may dominate a few crops


def test_short_run_lowers_loss_and_timm_loads_checkpoint(coco, tmp_path):
    json_path, image_dir = coco
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

"""Frozen-feature segmentation probe: data as MMSeg reads it, mIoU as MMSeg computes it, DINOv2's
feature protocols, an oracle ranked above a random backbone, per-seed determinism, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mae_transfer.cli.probe import main
from mae_transfer.data import make_ade_semantic
from mae_transfer.probe import (
    IGNORE_INDEX,
    BackboneInit,
    HeadConfig,
    IoUAccumulator,
    ViTFeatures,
    load_ade,
    load_ade_split,
    run_probe,
)
from mae_transfer.probe.head import upsample_bilinear

SIZE = 64
TINY = dict(depth=4, embed_dim=32, num_heads=2)  # a tiny ViT (vit_tiny_patch16 with these overrides)
HEAD = HeadConfig(steps=80, batch_size=8, lr=3e-2, log_every=1000)  # short: a higher lr than the default

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = make_ade_semantic(tmp_path_factory.mktemp("ade"), num_train=8, num_val=4, image_size=(SIZE, SIZE))
    train, val, k = load_ade(root, SIZE)
    return root, train, val, k


@pytest.mark.filterwarnings("ignore:`reduce_zero_label` will be deprecated")
def test_labels_are_reduced_and_read_as_mmseg_loads_them(tmp_path):
    from mmseg.datasets.transforms import LoadAnnotations

    for folder in ("images", "annotations"):
        (tmp_path / folder / "training").mkdir(parents=True)
    raw = np.array([[0, 1, 3, 255], [2, 2, 0, 1]], dtype=np.uint8).repeat(4, 0).repeat(4, 1)  # 8 x 16
    Image.fromarray(raw).save(tmp_path / "annotations" / "training" / "a.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "images" / "training" / "a.jpg")
    ours = load_ade_split(tmp_path, "training", size=16).labels[0]
    mmseg = LoadAnnotations(reduce_zero_label=True)(
        {"seg_map_path": str(tmp_path / "annotations" / "training" / "a.png"), "reduce_zero_label": True,
         "seg_fields": []})["gt_seg_map"]
    resized = np.asarray(Image.fromarray(mmseg.astype(np.uint8)).resize((16, 16), Image.NEAREST))
    assert ours.tolist() == resized.tolist()
    assert set(ours.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}


def test_miou_and_aacc_equal_mmseg_iou_metric():
    from mmseg.evaluation.metrics import IoUMetric

    k, g = 6, torch.Generator().manual_seed(0)
    labels = torch.randint(0, k - 1, (5, 24, 32), generator=g)  # class 5 never labelled ...
    labels[torch.rand(labels.shape, generator=g) < 0.2] = IGNORE_INDEX
    preds = torch.randint(0, k - 2, (5, 24, 32), generator=g)  # ... nor predicted: left out of the mean
    preds[labels == 1] = 1  # a class with a high IoU next to chance-level ones
    ours = IoUAccumulator(k)
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(k)]}
    for i in range(0, 5, 2):  # batches of different sizes
        ours.update(preds[i:i + 2], labels[i:i + 2])
    metric.process({}, [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": t[None]}}
                        for p, t in zip(preds, labels)])
    expected, got = metric.compute_metrics(metric.results), ours.compute()
    assert got["mIoU"] == pytest.approx(expected["mIoU"], abs=0.005)  # MMSeg rounds to 2 decimals
    assert got["aAcc"] == pytest.approx(expected["aAcc"], abs=0.005)
    assert got["per_class_iou"][k - 1] is None and None not in got["per_class_iou"][:k - 1]


def test_upsampling_equals_torch_bilinear():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    for size in [(64, 70), (5, 7), (3, 4)]:
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        assert torch.allclose(upsample_bilinear(x, size), expected, atol=1e-12)


@pytest.mark.parametrize("protocol, blocks", [("linear", [3]), ("multiscale", [0, 1, 2, 3])])
def test_features_are_the_normed_tokens_of_the_last_blocks(protocol, blocks):
    vit = BackboneInit(arch="vit_tiny_patch16", img_size=SIZE, overrides=TINY).build(seed=0)
    x = torch.randn(2, 3, SIZE, SIZE)
    maps = ViTFeatures(vit, protocol)(x)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 4)] * len(blocks)
    # the last map is the timm output (after the final norm), patch tokens only
    tokens = vit.forward_features(x)[:, 1:]
    assert torch.allclose(maps[-1], tokens.transpose(1, 2).reshape(2, 32, 4, 4), atol=1e-5)
    assert vit.out_indices == (3,)  # the backbone is left as it was


def _oracle(splits, num_classes: int, stride: int = 4):
    """Features that encode the labels: one-hot label maps (ignore as an extra class) average-pooled
    to a stride-4 grid, found by the exact bytes of the normalised (possibly flipped) image."""
    table = {}
    for split in splits:
        images = split.normalised()
        for image, label in zip(images, split.labels):
            for flip in (False, True):
                lab = label.flip(-1) if flip else label
                onehot = F.one_hot(lab.clamp(max=num_classes), num_classes + 1).permute(2, 0, 1).float()
                table[(image.flip(-1) if flip else image).numpy().tobytes()] = F.avg_pool2d(onehot, stride)

    def extract(images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([table[image.numpy().tobytes()] for image in images])]
    return extract


def test_the_probe_ranks_an_oracle_above_a_random_backbone(ade):
    _, train, val, k = ade
    oracle = run_probe(_oracle([train, val], k), train, val, seeds=(0,), num_classes=k, head=HEAD, name="oracle")[0]
    random = run_probe(BackboneInit(arch="vit_tiny_patch16", img_size=SIZE, overrides=TINY), train, val,
                       seeds=(0,), num_classes=k, head=HEAD)[0]
    # the oracle's ceiling is set by its stride-4 grid (thin parts blur), ~88 on the built-in shapes
    assert oracle.mIoU > 75 and oracle.mIoU > random.mIoU + 40, (oracle.mIoU, random.mIoU)
    assert random.name == "random" and random.times["train"] > 0


def test_same_seed_same_miou_and_checkpoint_init_loads_the_weights(ade, tmp_path):
    _, train, val, k = ade
    init = BackboneInit(arch="vit_tiny_patch16", img_size=SIZE, overrides=TINY)
    first, again = (run_probe(init, train, val, "multiscale", seeds=(0, 1), num_classes=k, head=HEAD)
                    for _ in range(2))
    assert [r.mIoU for r in first] == [r.mIoU for r in again]
    assert first[0].mIoU != first[1].mIoU  # another seed: another backbone and head
    # a checkpoint (MAE's {'model': ...} layout) of the seed-1 backbone gives seed-1's features
    torch.save({"model": init.build(seed=1).state_dict()}, tmp_path / "ckpt.pth")
    loaded = BackboneInit("mine", "vit_tiny_patch16", SIZE, str(tmp_path / "ckpt.pth"), overrides=TINY)
    x = train.normalised(0, 2)
    assert not loaded.seed_dependent
    assert torch.equal(ViTFeatures(loaded.build(seed=0))(x)[0], ViTFeatures(init.build(seed=1))(x)[0])


def test_cli_writes_probe_json_and_prints_the_table(ade, tmp_path, capsys):
    root = ade[0]
    rc = main(["--data", str(root), "--inits", "random", "--seeds", "2", "--steps", "5", "--img-size",
               str(SIZE), "--output", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "probe.json").read_text())
    mious = report["results"]["random"]["mIoU"]
    assert len(mious["values"]) == 2 and mious["mean"] == pytest.approx(np.mean(mious["values"]))
    assert mious["std"] == pytest.approx(np.std(mious["values"], ddof=1))
    assert report["settings"]["arch"] == "vit_tiny_patch16" and report["settings"]["num_classes"] == ade[3]
    out = capsys.readouterr().out
    assert "init" in out and "mIoU mean ± std" in out and f"{mious['mean']:.2f} ± {mious['std']:.2f}" in out


@pytest.mark.parametrize("args, says", [
    (["--data", "{tmp}/nowhere"], "does not exist"),
    (["--data", "{tmp}/empty"], "no images"),
    (["--inits", "mae"], "neither 'random' nor NAME=PATH"),
    (["--inits", "mae={tmp}/missing.pth"], "does not exist"),
    (["--inits", "random", "random"], "twice"),
    (["--arch", "vit_gigantic"], "not a known architecture"),
])
def test_cli_user_errors_are_one_sentence(tmp_path, capsys, args, says):
    (tmp_path / "empty" / "images" / "training").mkdir(parents=True)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--data" not in args:
        args += ["--data", str(tmp_path / "empty")]
    assert main(args + ["--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("probe: error: ") and says in err and err.count("\n") == 1

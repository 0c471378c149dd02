"""BEiT-style pretraining: k-means tokenizer, blockwise masking, the loop (loss, resume) and its
checkpoint in Detectron2 (``MODEL.VIT.WEIGHTS``) and MMSeg (``model.backbone.pretrained``)."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mae_transfer.pretrain import BEiTStylePretrainConfig, beit_trainer, pretrain_beit_style
from mae_transfer.pretrain.masking import blockwise_mask, blockwise_masks, default_min_patches
from mae_transfer.pretrain.tokenizer import PatchKMeansTokenizer, kmeans, patch_features

ITERS, SAVED_AT, DEPTH, IMG = 30, 24, 2, 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: extra threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scenes(num: int, size: int, seed: int = 0) -> np.ndarray:
    """``(num, size, size, 3)`` uint8: random rectangles and stripes on a noisy background."""
    rng = np.random.default_rng(seed)
    images = (rng.normal(120, 10, (num, size, size, 3))).clip(0, 255)
    for image in images:
        for _ in range(4):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(6, size // 2, 2)
            image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            image[:, ::4] = rng.integers(0, 256, 3)
    return images.astype(np.uint8)


def _tensors(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.25


# -- tokenizer --------------------------------------------------------------------------------------


def test_patch_features_are_pooled_cells_normalised_per_patch():
    images = _tensors(_scenes(2, 32))
    feats = patch_features(images, patch_size=16, pool=4, eps=0.0)
    assert feats.shape == (2, 4, 48)
    patch = images[1, :, 16:32, 0:16]  # row 1, column 0 = token 2 (row-major)
    cells = torch.stack([patch[c, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean() for c in range(3)
                         for i in range(4) for j in range(4)])
    expected = (cells - cells.mean()) / cells.std(unbiased=False)
    torch.testing.assert_close(feats[1, 2], expected, rtol=1e-4, atol=1e-4)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = (centers[:, None] + 0.3 * torch.randn(4, 50, 2, generator=g)).reshape(-1, 2)
    found, assign = kmeans(x, 4, iters=20, seed=1)
    order = torch.cdist(centers, found).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(found[order], centers, atol=0.15, rtol=0)
    assert (assign.reshape(4, 50) == order[:, None]).all()


def test_tokenizer_is_deterministic_and_assigns_every_patch_to_its_nearest_centroid():
    images = _tensors(_scenes(12, 64))
    first = PatchKMeansTokenizer.fit(images, vocab_size=16, patch_size=16, iters=10, seed=3)
    again = PatchKMeansTokenizer.fit(images, vocab_size=16, patch_size=16, iters=10, seed=3)
    other = PatchKMeansTokenizer.fit(images, vocab_size=16, patch_size=16, iters=10, seed=4)
    assert torch.equal(first.codebook, again.codebook) and not torch.equal(first.codebook, other.codebook)
    tokens = first.tokenize(images)
    assert tokens.shape == (12, 16) and tokens.dtype == torch.long
    assert torch.equal(tokens, again.tokenize(images))
    feats = patch_features(images, 16).reshape(-1, 48)
    brute = ((feats[:, None, :] - first.codebook[None]) ** 2).sum(-1)  # (N, K) by definition
    chosen = brute.gather(1, tokens.reshape(-1, 1)).squeeze(1)
    assert (chosen <= brute.min(1).values + 1e-4).all()
    assert len(tokens.unique()) > 8  # the codebook is used, not collapsed
    restored = PatchKMeansTokenizer.from_state_dict(first.state_dict())
    assert torch.equal(restored.tokenize(images), tokens)


# -- masking ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid, ratio", [((14, 14), 0.4), ((8, 8), 0.4), ((4, 4), 0.4), ((2, 2), 0.4), ((8, 8), 0.6)])
def test_blockwise_mask_masks_the_requested_share(grid, ratio):
    masks = blockwise_masks(40, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (40, grid[0] * grid[1]) and masks.dtype == torch.bool
    counts = masks.sum(1)
    assert (counts - ratio * grid[0] * grid[1]).abs().max() <= 1  # round(ratio * N) each
    again = blockwise_masks(40, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def _masked_neighbour_share(mask: torch.Tensor, grid) -> float:
    """Among the 4-neighbours of masked patches, the share that are masked."""
    m = mask.reshape(1, 1, *grid).float()
    cross = torch.tensor([[[[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]]])
    masked = torch.nn.functional.conv2d(m, cross, padding=1)[m > 0].sum()
    all_ = torch.nn.functional.conv2d(torch.ones_like(m), cross, padding=1)[m > 0].sum()
    return float(masked / all_)


def test_blockwise_masks_are_blocks_not_scattered_patches():
    """On BEiT's 14x14 grid the masked patches cluster: a masked patch's neighbours are mostly
    masked, far above the ~40% of a random mask with the same count."""
    g = torch.Generator().manual_seed(1)
    share = np.mean([_masked_neighbour_share(blockwise_mask((14, 14), 0.4, generator=g), (14, 14))
                     for _ in range(20)])
    scattered = np.mean([_masked_neighbour_share(torch.randperm(196, generator=g) < 78, (14, 14))
                         for _ in range(20)])
    assert share > 0.6 and scattered < 0.45
    assert default_min_patches((14, 14)) == 16 and default_min_patches((8, 8)) == 5
    assert default_min_patches((2, 2)) == 1


# -- pretraining ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, one_thread):
    """One 30-iteration run (depth 2, 64 px, 16 tokens); the checkpoint written at iteration 24
    is kept aside for the resume test."""
    root = tmp_path_factory.mktemp("beit_style")
    (root / "images").mkdir()
    for i, image in enumerate(_scenes(8, 96)):
        Image.fromarray(image).save(root / "images" / f"{i}.png")
    cfg = BEiTStylePretrainConfig(data=str(root / "images"), output=str(root / "run"), depth=DEPTH, iters=ITERS,
                                  batch_size=8, lr=1.5e-3, img_size=IMG, warmup_iters=3, vocab_size=16,
                                  tokenizer_patches=512, log_every=10, save_every=8)
    save = beit_trainer._save

    def keep_a_copy(out, model, optimizer, iteration, *args):
        save(out, model, optimizer, iteration, *args)
        if iteration == SAVED_AT:
            (root / "interrupted").mkdir()
            shutil.copy(out / "checkpoint-last.pth", root / "interrupted" / "checkpoint-last.pth")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(beit_trainer, "_save", keep_a_copy)
        summary = pretrain_beit_style(cfg)
    return root, cfg, summary


def test_pretraining_lowers_the_loss_and_writes_its_outputs(pretrained):
    root, _, summary = pretrained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    losses = metrics["loss"]
    assert len(losses) == ITERS and len(metrics["acc"]) == ITERS and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])
    assert np.mean(losses[:3]) == pytest.approx(np.log(16), abs=0.5)  # starts near chance
    with Image.open(root / "run" / "loss.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert summary["final_loss"] == pytest.approx(np.mean(losses[-10:]))
    assert summary["chance_loss"] == pytest.approx(np.log(16))


def test_resume_gives_the_same_weights_as_the_uninterrupted_run(pretrained):
    root, cfg, _ = pretrained
    resumed = dataclasses.replace(cfg, output=str(root / "interrupted"), resume=True)
    pretrain_beit_style(resumed)
    full = torch.load(root / "run" / "checkpoint-last.pth", weights_only=True)
    again = torch.load(root / "interrupted" / "checkpoint-last.pth", weights_only=True)
    assert again["iteration"] == ITERS and again["history"]["loss"] == full["history"]["loss"]
    assert torch.equal(again["tokenizer"]["codebook"], full["tokenizer"]["codebook"])
    for key, value in full["model"].items():
        assert torch.equal(again["model"][key], value), key


# -- the checkpoint in both frameworks --------------------------------------------------------------

PRETRAIN_ONLY = {"mask_token", "lm_head.weight", "lm_head.bias", "<tokenizer>"}


def _check_loaded(net, path, encoder: dict, absent: set) -> None:
    """Every ViT tensor of the checkpoint is in ``net`` unchanged, except the ``absent`` ones
    (parts this ViT variant lacks), and the load report names the pretraining-only entries."""
    from mae_transfer.checkpoints import load_pretrained

    state = net.state_dict()
    assert {k for k in encoder if k not in state} == absent
    for key in set(encoder) - absent:
        assert torch.equal(state[key], encoder[key]), key
    report = load_pretrained(copy.deepcopy(net), path)  # what the framework's load reported
    assert report.layout == "mae" and not report.unexpected and not report.unexplained and not report.resized
    assert PRETRAIN_ONLY <= set(report.ignored)
    assert "mask token" in report.ignored["mask_token"] and "BEiT" in report.ignored["lm_head.weight"]
    assert set(report.loaded) == set(encoder) - absent


def test_checkpoint_loads_into_detectron2_and_mmseg(pretrained):
    pytest.importorskip("detectron2")
    pytest.importorskip("mmseg")
    from mae_transfer.det import build_model
    from mae_transfer.seg import build_segmentor

    root, _, _ = pretrained
    path = root / "run" / "checkpoint-last.pth"
    model = torch.load(path, weights_only=True)["model"]
    encoder = {k: v for k, v in model.items() if k not in PRETRAIN_ONLY}
    assert set(model) - set(encoder) == {"mask_token", "lm_head.weight", "lm_head.bias"}

    det = build_model("demo_vit_tiny", ["MODEL.VIT.WEIGHTS", str(path), "MODEL.VIT.DEPTH", DEPTH,
                                        "MODEL.VIT.GLOBAL_BLOCKS", "[1]", "MODEL.VIT.PRETRAIN_IMG_SIZE", IMG,
                                        "MODEL.ROI_HEADS.NUM_CLASSES", 3])
    _check_loaded(det.backbone.net, path, encoder, absent={"cls_token", "norm.weight", "norm.bias"})

    seg = build_segmentor("demo_vit_tiny", {"model.backbone.depth": DEPTH, "model.backbone.out_indices": (0, 1, 1, 1),
                                            "model.backbone.pretrain_img_size": IMG,
                                            "model.backbone.pretrained": str(path)})
    seg.init_weights()  # MMEngine's runner does this before training; it loads model.backbone.pretrained
    _check_loaded(seg.backbone.net, path, encoder, absent={"norm.weight", "norm.bias"})


@pytest.mark.parametrize("change, message", [({"mask_ratio": 1.0}, "--mask-ratio"), ({"vocab_size": 1}, "--vocab-size"),
                                             ({"model": "samvit_base_patch16"}, "--model")])
def test_impossible_settings_fail_with_the_option_named(tmp_path, change, message):
    from mae_transfer.errors import ConfigError

    cfg = BEiTStylePretrainConfig(data=str(tmp_path), output=str(tmp_path / "out"), **change)
    with pytest.raises(ConfigError, match=message):
        pretrain_beit_style(cfg)


def test_beit_style_is_a_builtin_init_with_its_own_recipe(tmp_path):
    from mae_transfer.compare import PretrainRecipe, parse_init, resolve_inits

    assert parse_init("beit_style") == ("beit_style", None)
    part = PretrainRecipe().part("beit_style")
    assert set(part) == {"beit_iters", "beit_batch_size", "beit_lr", "beit_img_size", "beit_vocab_size", "seed"}
    with pytest.raises(FileNotFoundError, match="tools/pretrain_beit.py"):
        resolve_inits(["beit_style"], tmp_path, pretrain_missing=False)

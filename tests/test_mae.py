"""MAE pretraining: masking, loss, official parameter layout and forward, pretraining run, and
transfer of the checkpoint into the detection and segmentation backbones.

The official ``models_mae.py`` is restated here from the paper's code on timm's ``PatchEmbed`` and
``Block`` (what the official code itself uses), so the comparison is against an independent model.
"""
import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from mae_transfer.data import make_coco_instances
from mae_transfer.models import create_vit
from mae_transfer.models.mae import create_mae, random_masking, sincos_pos_embed_2d
from mae_transfer.pretrain import MAEPretrainConfig, pretrain_mae

TINY = dict(img_size=64)  # 4x4 patches of 16 px


def official_sincos(dim, grid):
    """``util/pos_embed.get_2d_sincos_pos_embed`` of the official MAE, restated in numpy."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


class OfficialMAE(nn.Module):
    """Structure and forward of the official ``MaskedAutoencoderViT`` (timm blocks)."""

    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, decoder_embed_dim,
                 decoder_depth, decoder_num_heads, norm_pix_loss):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, 4.0, qkv_bias=True, norm_layer=norm)
                                     for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, 4.0, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * 3, bias=True)
        self.p, self.norm_pix_loss = patch_size, norm_pix_loss

    def forward(self, imgs, mask_ratio, noise):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        n, length, d = x.shape
        keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, length])
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = self.mask_token.repeat(n, length + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        h = imgs.shape[2] // self.p
        target = imgs.reshape(n, 3, h, self.p, h, self.p)
        target = torch.einsum("nchpwq->nhwpqc", target).reshape(n, h * h, self.p ** 2 * 3)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum(), pred, mask


# (49, 0.6) and (40, 0.9): the official int() keeps 19 and 3 where round() would keep 20 and 4.
@pytest.mark.parametrize("num_patches, ratio, keep", [(196, 0.75, 49), (64, 0.75, 16), (49, 0.6, 19),
                                                      (40, 0.9, 3), (50, 0.25, 37)])
def test_masking_keeps_official_truncated_count_per_sample(num_patches, ratio, keep):
    torch.manual_seed(0)
    x = torch.arange(4 * num_patches, dtype=torch.float32).view(4, num_patches, 1).repeat(1, 1, 3)
    visible, mask, ids_restore = random_masking(x, ratio)
    assert keep == int(num_patches * (1 - ratio))  # the official models_mae.py expression
    assert visible.shape == (4, keep, 3)
    assert torch.equal(mask.sum(1), torch.full((4,), float(num_patches - keep)))
    for b in range(4):  # visible tokens are exactly the unmasked ones
        kept = sorted(visible[b, :, 0].long().tolist())
        assert kept == sorted(x[b, mask[b] == 0, 0].long().tolist())
    assert len({tuple(m.tolist()) for m in mask}) == 4  # a different mask per sample
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(num_patches).expand(4, -1))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_is_mse_over_masked_patches_only(norm_pix):
    torch.manual_seed(0)
    model = create_mae("mae_vit_tiny_patch16", norm_pix_loss=norm_pix, depth=2, **TINY).eval()
    imgs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        loss, pred, mask = model(imgs)
    p, expected, count = 16, 0.0, 0
    for b in range(2):
        for i in range(4):
            for j in range(4):
                if mask[b, i * 4 + j] == 0:
                    continue
                patch = imgs[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].permute(1, 2, 0).reshape(-1)
                if norm_pix:
                    patch = (patch - patch.mean()) / (patch.var(unbiased=True) + 1e-6).sqrt()
                expected += ((pred[b, i * 4 + j] - patch) ** 2).mean().item()
                count += 1
    assert count == 2 * 12
    assert loss.item() == pytest.approx(expected / count, rel=1e-5)


def test_parameter_names_and_shapes_match_official_base():
    with torch.device("meta"):
        ours = create_mae("mae_vit_base_patch16")
        official = OfficialMAE(224, 16, 768, 12, 12, 512, 8, 16, True)
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert got == want
    assert len(got) == 254 and sum(np.prod(s) for s in got.values()) == 111_907_840
    assert not ours.pos_embed.requires_grad and not ours.decoder_pos_embed.requires_grad


# ratio 0.9 on 16 patches: official int() keeps 1 patch, round() would keep 2.
@pytest.mark.parametrize("norm_pix, ratio", [(True, 0.75), (False, 0.75), (True, 0.9)])
def test_forward_matches_official_with_same_weights(norm_pix, ratio):
    torch.manual_seed(0)
    ours = create_mae("mae_vit_tiny_patch16", norm_pix_loss=norm_pix, depth=4, **TINY).eval()
    official = OfficialMAE(64, 16, 192, 4, 3, 128, 2, 4, norm_pix).eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    assert torch.allclose(ours.pos_embed[0].double(), torch.from_numpy(official_sincos(192, 4)), atol=1e-6)
    imgs, noise = torch.randn(3, 3, 64, 64), torch.rand(3, 16)
    with torch.no_grad():
        loss, pred, mask = ours(imgs, mask_ratio=ratio, noise=noise)
        loss_ref, pred_ref, mask_ref = official(imgs, ratio, noise)
    assert torch.equal(mask, mask_ref)
    torch.testing.assert_close(pred, pred_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, loss_ref, atol=1e-6, rtol=1e-5)


def test_sincos_rectangular_grid_matches_rule():
    emb = sincos_pos_embed_2d(8, (2, 3), cls_token=False)[0]
    row, col = 1, 2  # token index 5: x = col in the first half, y = row in the second half
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    want = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                           np.sin(row * omega), np.cos(row * omega)])
    assert np.allclose(emb[row * 3 + col].numpy(), want, atol=1e-6)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mae")
    _, image_dir = make_coco_instances(root / "data", num_images=8, image_size=(96, 96))
    cfg = MAEPretrainConfig(data=str(image_dir), output=str(root / "run"), iters=24, batch_size=8,
                            lr=1.5e-3, img_size=64, warmup_iters=3, log_every=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        summary = pretrain_mae(cfg)
    finally:
        torch.set_num_threads(threads)
    return root / "run", summary


def test_pretraining_lowers_loss_and_writes_outputs(pretrained):
    run, summary = pretrained
    metrics = json.loads((run / "metrics.json").read_text())
    losses = metrics["loss"]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < 0.9 * np.mean(losses[:3])
    for png in ("loss.png", "reconstruction.png"):
        with Image.open(run / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert summary["final_loss"] == pytest.approx(np.mean(losses[-10:]))


def test_checkpoint_has_official_layout(pretrained):
    run, _ = pretrained
    ckpt = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 24 and ckpt["args"]["model"] == "mae_vit_tiny_patch16"
    official = OfficialMAE(64, 16, 192, 12, 3, 128, 2, 4, True)
    official.load_state_dict(ckpt["model"], strict=True)  # what the official code would do


def _assert_clean(report, model_prefix, model, ckpt):
    assert not report.unexplained and not report.unexpected
    ignored = [k[len(model_prefix):] if k.startswith(model_prefix) else k for k in report.ignored]
    assert not [k for k in ignored if not k.startswith(("decoder_", "mask_token", "<"))
                and k not in ("cls_token", "pos_embed", "norm.weight", "norm.bias")]
    state = model.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.bias"):
        assert torch.equal(state[model_prefix + key], ckpt["model"][key])


def test_checkpoint_loads_into_det_and_seg_backbones(pretrained):
    from mae_transfer.checkpoints import load_pretrained
    from mae_transfer.det.backbone import ViTSimplePyramid
    from mae_transfer.seg.backbone import MAETransferViT

    path = pretrained[0] / "checkpoint-last.pth"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    vitdet = create_vit("vit_tiny_patch16", img_size=128, window_size=4, global_blocks=(2, 5, 8, 11),
                        rel_pos="decomposed", use_cls_token=False, final_norm=False)
    det = ViTSimplePyramid(vitdet, out_channels=32)
    report = load_pretrained(det, path, prefix="net.")
    assert report.layout == "mae_pretrain"
    _assert_clean(report, "net.", det, ckpt)
    assert set(report.resized) == {"net.pos_embed"}  # 4x4 pretraining grid -> the ViT's 14x14
    assert {k.split(".")[-1] for k in report.missing} == {"rel_pos_h", "rel_pos_w"}  # zero-init

    seg = MAETransferViT(arch="vit_tiny_patch16", img_size=64, pretrained=str(path), rel_pos="beit")
    seg.init_weights()
    report = load_pretrained(seg.net, path)
    _assert_clean(report, "", seg.net, ckpt)
    assert {k.split(".")[-1] for k in report.missing} == {"relative_position_bias_table"}
    with torch.no_grad():
        maps = seg(torch.randn(1, 3, 64, 64))
        pyramid = det(torch.randn(1, 3, 128, 128))
    assert [m.shape for m in maps] == [(1, 192, 4, 4)] * 4
    assert pyramid["p2"].shape == (1, 32, 32, 32)


def test_resume_continues_from_checkpoint(pretrained, tmp_path):
    import shutil
    run, _ = pretrained
    shutil.copy(run / "checkpoint-last.pth", tmp_path / "checkpoint-last.pth")
    before = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=True)
    cfg = MAEPretrainConfig(**{**before["args"], "output": str(tmp_path), "iters": 27, "resume": True})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain_mae(cfg)
    finally:
        torch.set_num_threads(threads)
    after = torch.load(tmp_path / "checkpoint-last.pth", map_location="cpu", weights_only=True)
    assert after["iteration"] == 27
    assert after["history"]["loss"][:24] == before["history"]["loss"] and len(after["history"]["loss"]) == 27
    key = "blocks.0.attn.qkv.weight"
    assert not torch.equal(after["model"][key], before["model"][key])

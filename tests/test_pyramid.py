"""Pyramid adapters: geometry for the B/L presets, numbers against Detectron2 and MMSeg."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from mae_transfer.models import MultiLevelPyramid, SimplePyramid, create_vit


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _perturb_(module, std=0.05):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
        for name, b in module.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                b.copy_(torch.rand_like(b) + 0.5)
    return module.eval()


@pytest.mark.parametrize("preset, width", [("vit_base_patch16", 768), ("vit_large_patch16", 1024)])
@pytest.mark.parametrize("hw", [(1024, 1024), (512, 512), (800, 1216), (512, 768)])
def test_pyramids_give_strides_4_to_32(preset, width, hw):
    """ViT (windowed, ViTDet layout) -> both pyramids: 4 maps at strides 4/8/16/32.

    Runs on the meta device (shapes only, no arithmetic), so real preset widths and input sizes
    cost nothing. Depth is cut to 4 blocks: shapes do not depend on depth, and 4 blocks is what
    the multi-level pyramid taps (one per block here).
    """
    with torch.device("meta"):
        vit = create_vit(preset, depth=4, img_size=1024, window_size=14, global_blocks=(1, 3),
                         rel_pos="decomposed", out_indices=(0, 1, 2, 3))  # fmt: skip
        simple = SimplePyramid(in_channels=vit.embed_dim, out_channels=256, norm="LN")
        multi = MultiLevelPyramid(in_channels=vit.embed_dim, norm="BN").eval()
        x = torch.empty(2, 3, *hw)
    maps = vit.forward_maps(x)
    assert vit.embed_dim == width
    assert [m.shape for m in maps] == [(2, width, hw[0] // 16, hw[1] // 16)] * 4
    for pyramid, channels in ((simple, 256), (multi, width)):
        assert pyramid.strides == (4, 8, 16, 32)
        assert pyramid.out_channels == channels
        outs = pyramid(maps)
        assert [tuple(o.shape) for o in outs] == [
            (2, channels, hw[0] // s, hw[1] // s) for s in (4, 8, 16, 32)
        ]
    assert simple.out_features == ("p2", "p3", "p4", "p5")


def test_simple_pyramid_matches_detectron2():
    """Detectron2 SimpleFeaturePyramid weights load with ``backbone.`` stripped (``simfp_*`` keys
    as they are), and the outputs are equal."""
    d2vit = pytest.importorskip("detectron2.modeling.backbone.vit")
    net = d2vit.ViT(img_size=128, patch_size=16, embed_dim=64, depth=1, num_heads=2,
                    norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))  # fmt: skip
    ref = _perturb_(d2vit.SimpleFeaturePyramid(net, "last_feat", out_channels=32,
                                               scale_factors=(4.0, 2.0, 1.0, 0.5), norm="LN"))  # fmt: skip
    ours = SimplePyramid(in_channels=64, out_channels=32, norm="LN").eval()
    pyramid_state = {k: v for k, v in ref.state_dict().items() if k.startswith("simfp_")}
    ours.load_state_dict(pyramid_state, strict=True)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        expected = ref(x)
        got = ours([net(x)["last_feat"]])
    assert list(expected) == ["p2", "p3", "p4", "p5"]
    for g, e in zip(got, expected.values()):
        torch.testing.assert_close(g, e)


def test_multilevel_pyramid_matches_mmseg():
    """MMSeg Feature2Pyramid (the neck of MMSeg's MAE/BEiT configs): ``upsample_4x`` -> ``fpn1``,
    ``upsample_2x`` -> ``fpn2``; equal outputs (BN in eval with non-trivial running stats)."""
    pytest.importorskip("mmseg")
    from mmseg.models.necks import Feature2Pyramid

    import mae_transfer.compat.mmcv_ops  # noqa: F401  (before mmseg.models)

    ref = _perturb_(
        Feature2Pyramid(32, [4, 2, 1, 0.5], norm_cfg=dict(type="BN", requires_grad=True))
    )
    ours = MultiLevelPyramid(in_channels=32, norm="BN").eval()
    renames = {"upsample_4x.": "fpn1.", "upsample_2x.": "fpn2."}
    state = {}
    for key, value in ref.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        state[key] = value
    ours.load_state_dict(state, strict=True)
    maps = [torch.randn(2, 32, 6, 10) for _ in range(4)]
    with torch.no_grad():
        for g, e in zip(ours(maps), ref(maps)):
            torch.testing.assert_close(g, e)

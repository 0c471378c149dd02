"""The mmcv.ops stand-in: mmseg.models imports only with it, and its two ops are numerically right."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mae_transfer.compat import mmcv_ops


def _import_in_subprocess(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_mmseg_models_needs_the_shim():
    """Without the hook mmseg.models fails on mmcv-lite; the venv's .pth makes the plain import work."""
    without = _import_in_subprocess(
        "import sys; from mae_transfer.compat.mmcv_ops_hook import MmcvOpsFinder; "
        "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, MmcvOpsFinder)]; "
        "import mmseg.models")
    assert without.returncode != 0
    assert "mmcv._ext" in without.stderr
    plain = _import_in_subprocess(
        "import detectron2._C, mmseg.models, mmcv, timm, pycocotools; "
        "from mmseg.models.losses import FocalLoss; import mmcv.ops; "
        "assert mmcv.ops.__mae_transfer_shim__")
    assert plain.returncode == 0, plain.stderr[-2000:]
    explicit = _import_in_subprocess(
        "import sys; from mae_transfer.compat.mmcv_ops_hook import MmcvOpsFinder; "
        "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, MmcvOpsFinder)]; "
        "import mae_transfer.compat.mmcv_ops; import mmseg.models")
    assert explicit.returncode == 0, explicit.stderr[-2000:]


def test_optional_ops_report_missing_as_module_not_found():
    import mmcv.ops
    with pytest.raises(ModuleNotFoundError, match="compiled ops"):
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    assert not hasattr(mmcv.ops, "__wrapped__")  # dunder lookups stay AttributeError


def test_point_sample_matches_bilinear_interpolation_at_pixel_centres():
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 5, 7)
    # pixel centres in normalised [0, 1] coordinates hit the pixel values exactly
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    points = torch.stack([(xs + 0.5) / 7, (ys + 0.5) / 5], dim=-1).reshape(1, -1, 2).repeat(2, 1, 1)
    sampled = mmcv_ops.point_sample(feats, points)
    assert sampled.shape == (2, 3, 35)
    torch.testing.assert_close(sampled, feats.reshape(2, 3, 35))
    grid = mmcv_ops.point_sample(feats, points.reshape(2, 5, 7, 2))
    torch.testing.assert_close(grid, feats)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_sigmoid_focal_loss_matches_torchvision(reduction):
    torch.manual_seed(0)
    logits = torch.randn(16, 5) * 3
    target = torch.randint(0, 6, (16,))  # 5 == background
    ours = mmcv_ops.sigmoid_focal_loss(logits, target, 2.0, 0.25, None, reduction)
    one_hot = F.one_hot(target, 6)[:, :5].float()
    ref = torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha=0.25, gamma=2.0, reduction="none")
    ref = {"none": ref, "sum": ref.sum(), "mean": ref.sum() / 16}[reduction]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)

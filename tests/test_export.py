"""tools/export.py on tiny trained runs: TorchScript (and ONNX where the 'onnx' package is installed)
matches eager within 1e-4 on inputs other than the tracing example; the eager views match the
frameworks' own inference paths."""
from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_runs import det_run, seg_run
from PIL import Image

from mae_transfer.cli.export import main as export_main
from mae_transfer.inference import Predictor
from mae_transfer.inference.export import (
    DetBackbone,
    FixedAdaptiveAvgPool2d,
    SegModel,
    det_model_adapter,
    example_image,
    max_difference,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "inference_runs"


def _image(folder: Path, size: tuple[int, int]) -> torch.Tensor:
    """A real image of the run's data (not the noise the export traced with), as (1, 3, H, W) RGB 0..255."""
    path = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))[-1]
    return example_image(size, np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("size,bins", [((4, 4), 3), ((16, 16), 6), ((7, 12), (2, 5)), ((5, 9), (None, 4))])
def test_fixed_adaptive_pool_equals_torch(size, bins):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(FixedAdaptiveAvgPool2d(bins)(x), torch.nn.AdaptiveAvgPool2d(bins)(x))


def test_onnx_without_the_package_is_one_sentence(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert export_main(["--run", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["export: error: ONNX export needs the 'onnx' package, which is not installed; "
                   "pip install onnx (or use --format torchscript)."]


@pytest.mark.slow
def test_det_backbone_and_mask_rcnn_torchscript_match_eager(runs_root, tmp_path, capsys):
    run, images = det_run(runs_root)
    assert export_main(["--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "bb.pt")]) == 0
    assert "det backbone at 128x128" in capsys.readouterr().out
    predictor = Predictor.from_run(run)
    model = predictor.model
    x = _image(images, (128, 128))
    exported = torch.jit.load(str(tmp_path / "bb.pt"))
    with torch.no_grad():
        # eager reference: Detectron2's own normalisation and padding, then the backbone
        reference = model.backbone(model.preprocess_image([{"image": x[0]}]).tensor)
        assert max_difference(list(reference.values()), exported(x)) <= TOL
        assert max_difference(DetBackbone(model)(x), exported(x)) <= TOL

    assert export_main(["--run", str(run), "--part", "model", "--format", "torchscript", "--image",
                        str(sorted(images.iterdir())[0]), "--out", str(tmp_path / "mrcnn.pt")]) == 0
    traced = torch.jit.load(str(tmp_path / "mrcnn.pt"))
    adapter = det_model_adapter(model, x[0])
    with torch.no_grad():
        eager, scripted = adapter(x[0]), traced(x[0])
    assert len(eager) == 5 and eager[0].shape[0] > 0  # boxes, classes, masks, scores, image size
    assert max_difference(eager, scripted) <= TOL


@pytest.mark.slow
def test_segmentor_torchscript_matches_eager_and_mmseg(runs_root, tmp_path, capsys):
    run, data = seg_run(runs_root)
    out = tmp_path / "seg.pt"
    assert export_main(["--run", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert "seg model at 128x128" in capsys.readouterr().out  # the config's crop
    predictor = Predictor.from_run(run)
    folder = data / "images" / "validation"
    x = _image(folder, (128, 128))
    exported = torch.jit.load(str(out))
    with torch.no_grad():
        logits = SegModel(predictor.model)(x)
        assert max_difference(logits, exported(x)) <= TOL
    # the wrapper's own normalisation agrees with MMSeg's pipeline + preprocessor (whole mode; the test
    # pipeline's resize keeps a 128 px image as it is)
    image = x[0].permute(1, 2, 0).numpy().astype(np.uint8)
    probabilities = predictor(image, probabilities=True).probabilities
    np.testing.assert_allclose(logits[0].softmax(0).numpy(), probabilities, atol=1e-5)


@pytest.mark.slow
def test_onnx_exports_match_eager(runs_root, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    det, _ = det_run(runs_root)
    seg, _ = seg_run(runs_root)
    for run, part in ((det, "backbone"), (det, "model"), (seg, "model")):
        out = tmp_path / f"{run.name}_{part}.onnx"
        assert export_main(["--run", str(run), "--part", part, "--format", "onnx", "--out", str(out)]) == 0
        assert "largest difference to eager" in capsys.readouterr().out

"""Predictor and tools/predict.py on tiny trained runs, against Detectron2's DefaultPredictor and
MMSeg's inference_model; the bad inputs (unreadable image, missing / unfinished run, weights of
another architecture) end in one sentence, exit 2, and leave no output behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _inference_runs import CLASSES_DET, CLASSES_SEG, copy_run, det_run, seg_run
from PIL import Image

from mae_transfer.cli.predict import main as predict_main
from mae_transfer.errors import UserError
from mae_transfer.inference import Predictor, collect_images, find_run, read_image
from mae_transfer.inference.coco import encode_mask
from mae_transfer.inference.writers import StagedFolder

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "inference_runs"


def _one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith("predict: error:")]
    assert len(err) == 1, err
    assert all(name in err[0] for name in names), err[0]
    return err[0]


# ---------------------------------------------------------------- inputs and run folders (fast)

def test_read_image_accepts_paths_pil_and_arrays_and_names_bad_files(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), array)
    assert np.array_equal(read_image(Image.fromarray(array).convert("L").convert("RGB")),
                          np.asarray(Image.fromarray(array).convert("L").convert("RGB")))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"broken\.jpg cannot be read \(not a decodable image\)"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(UserError, match="HxWx3 uint8"):
        read_image(array.astype(np.float32))
    (tmp_path / "notes.txt").write_text("x")
    assert collect_images([tmp_path]) == [tmp_path / "a.png", tmp_path / "broken.jpg"]


def test_run_folders_missing_unknown_and_unfinished(tmp_path):
    with pytest.raises(UserError, match=r"Run folder .*nowhere does not exist"):
        find_run(tmp_path / "nowhere")
    with pytest.raises(UserError, match="neither config.yaml"):
        find_run(tmp_path)
    (tmp_path / "config.yaml").write_text("MODEL:\n  MASK_ON: True\n")
    with pytest.raises(UserError, match="no checkpoint yet"):
        find_run(tmp_path)
    (tmp_path / "model_0000009.pth").write_bytes(b"")
    (tmp_path / "model_0000019.pth").write_bytes(b"")
    (tmp_path / ".model_final.pth.tmp").write_bytes(b"")  # a half-written save is never picked
    assert find_run(tmp_path).weights.name == "model_0000019.pth"
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    assert find_run(tmp_path).weights.name == "model_0000009.pth"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_cuda_device_is_one_sentence(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(UserError, match="Device 'cuda' is not available here"):
        Predictor("demo_vit_tiny", tmp_path / "w.pth", device="cuda")


def test_staged_output_refuses_an_earlier_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="already exists and is not empty"):
        StagedFolder(tmp_path / "out")


def test_rle_round_trips_through_pycocotools():
    from pycocotools import mask as mask_util

    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [7, 9]
    assert np.array_equal(mask_util.decode({**rle, "counts": rle["counts"].encode()}), mask)


# ---------------------------------------------------------------- detection (slow: trains a tiny run)

@pytest.mark.slow
def test_det_predictor_matches_detectron2_default_predictor(runs_root):
    from detectron2.engine import DefaultPredictor

    run, images = det_run(runs_root)
    predictor = Predictor.from_run(run, score_thresh=0.0)
    assert predictor.task == "det" and len(predictor.class_names) == 2
    path = sorted(images.iterdir())[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    result = predictor(path)
    reference = DefaultPredictor(predictor.cfg)(rgb[:, :, ::-1].copy())["instances"]  # it takes BGR
    assert len(result) == len(reference) > 0
    np.testing.assert_allclose(result.boxes, reference.pred_boxes.tensor.numpy(), atol=1e-4)
    np.testing.assert_allclose(result.scores, reference.scores.numpy(), atol=1e-5)
    assert np.array_equal(result.masks, reference.pred_masks.numpy())
    plain = result.to_dict()
    assert plain["masks"].shape == (len(result), 128, 128) and plain["image_size"] == (128, 128)
    assert set(plain) == {"boxes", "scores", "classes", "class_names", "masks", "image_size"}

    batch = predictor([Image.open(path), rgb, rgb[:96]])  # PIL, array, and a smaller image in one batch
    np.testing.assert_allclose(batch[0].boxes, result.boxes, atol=1e-4)
    np.testing.assert_allclose(batch[1].scores, result.scores, atol=1e-5)
    assert batch[2].image_size == (96, 128)


@pytest.mark.slow
def test_predict_tool_writes_overlays_and_coco_results(runs_root, tmp_path, capsys):
    from pycocotools.coco import COCO

    run, images = det_run(runs_root)
    out = tmp_path / "pred"
    assert predict_main(["--run", str(run), str(images), "--out", str(out), "--score-thresh", "0"]) == 0
    names = sorted(p.name for p in images.iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == [n.rsplit(".", 1)[0] + ".png" for n in names]
    assert Image.open(out / (Path(names[0]).stem + ".png")).size == (128, 128)
    gt = COCO(str(out / "images.json"))
    detections = gt.loadRes(str(out / "predictions.json"))
    assert len(detections.getAnnIds()) == 5 * len(names)  # TEST.DETECTIONS_PER_IMAGE of the run
    first = detections.loadAnns(detections.getAnnIds(imgIds=[1]))[0]
    assert {"bbox", "segmentation", "score", "area"} <= set(first)
    # the run's dataset is registered in this process (a fresh process without it says "class 0", ...)
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CLASSES_DET)
    assert not list(tmp_path.glob(".pred.*"))  # the staging folder is gone


@pytest.mark.slow
def test_predict_tool_bad_inputs_end_in_one_sentence_and_write_nothing(runs_root, tmp_path, capsys):
    run, images = det_run(runs_root)
    good = sorted(images.iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"

    assert predict_main(["--run", str(run), str(good), str(broken), "--out", str(out)]) == 2
    _one_error_line(capsys, str(broken), "cannot be read")
    assert predict_main(["--run", str(tmp_path / "no_run"), str(good), "--out", str(out)]) == 2
    _one_error_line(capsys, "no_run", "does not exist")

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    assert predict_main(["--run", str(unfinished), str(good), "--out", str(out)]) == 2
    _one_error_line(capsys, str(unfinished), "no checkpoint yet")

    other = copy_run(run, tmp_path / "other_arch")  # the same weights under a wider ViT
    config = (other / "config.yaml").read_text()
    assert "    EMBED_DIM: null\n" in config
    (other / "config.yaml").write_text(config.replace("    EMBED_DIM: null\n", "    EMBED_DIM: 96\n"))
    assert predict_main(["--run", str(other), str(good), "--out", str(out)]) == 2
    _one_error_line(capsys, str(other / "model_final.pth"), "does not fit")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "predict.py"), "--run", str(run), str(broken),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"predict: error: Image file {broken} cannot be read")


# ---------------------------------------------------------------- segmentation (slow: trains a tiny run)

@pytest.mark.slow
def test_seg_predictor_matches_mmseg_inference_model(runs_root, tmp_path):
    from mmseg.apis import inference_model, init_model

    import mae_transfer.seg  # noqa: F401  (registers the backbone for init_model)

    run, data = seg_run(runs_root)
    predictor = Predictor.from_run(run)
    assert predictor.task == "seg" and predictor.class_names == CLASSES_SEG
    files = find_run(run)
    reference = init_model(str(files.config), str(files.weights), device="cpu")
    path = sorted((data / "images" / "validation").iterdir())[0]
    wide = tmp_path / "wide.png"  # another aspect ratio: the test pipeline's keep-ratio resize acts
    Image.open(path).resize((96, 48)).save(wide)
    for image in (path, wide):
        result = predictor(image, probabilities=True)
        expected = inference_model(reference, str(image))
        assert np.array_equal(result.label_map, expected.pred_sem_seg.data[0].numpy())
        np.testing.assert_allclose(result.probabilities, expected.seg_logits.data.softmax(0).numpy(), atol=1e-5)
        assert result.probabilities.shape == (3, *result.image_size)
    batch = predictor([str(path), str(wide), Image.open(path)])
    assert [r.image_size for r in batch] == [(64, 64), (48, 96), (64, 64)] and batch[2].probabilities is None
    assert np.array_equal(batch[0].label_map, batch[2].label_map)


@pytest.mark.slow
def test_predict_tool_writes_label_pngs_and_legend_overlays(runs_root, tmp_path, capsys):
    run, data = seg_run(runs_root)
    folder = data / "images" / "validation"
    out = tmp_path / "seg_pred"
    assert predict_main(["--run", str(run), str(folder), str(data / "images" / "training"), "--out", str(out),
                         "--batch-size", "2"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["classes"] == list(CLASSES_SEG) and len(index["images"]) == 3
    entry = index["images"][0]
    label = np.asarray(Image.open(out / entry["labels"]))
    expected = Predictor.from_run(run)(entry["image"]).label_map
    assert label.shape == (64, 64) and np.array_equal(label, expected)
    overlay = Image.open(out / entry["overlay"])
    assert overlay.size[0] > 64 and overlay.size[1] >= 64  # the legend is beside the image

    other = copy_run(run, tmp_path / "narrow_head")
    config = next(other.glob("*.py"))
    text = config.read_text()
    assert "channels=16," in text
    config.write_text(text.replace("channels=16,", "channels=24,"))
    assert predict_main(["--run", str(other), str(folder), "--out", str(tmp_path / "never")]) == 2
    _one_error_line(capsys, "iter_2.pth", "does not fit")
    assert not (tmp_path / "never").exists()

"""Reliability of tools/train_det.py: bad inputs end in one sentence (and a previous run's output
directory survives them), code-running pickles are refused, a SIGKILLed run resumes to the same
weights, a NaN loss stops the run and keeps the last good checkpoint.

Most cases call the tool's entry point (``mae_transfer.cli.train_det.main(argv)``, what tools/train_det.py
calls) in this process; a few run tools/train_det.py in a subprocess.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mae_transfer.cli.train_det import main as run
from mae_transfer.data import make_coco_instances
from mae_transfer.models import create_vit

from _reliability import (
    PYTHON,
    REPO,
    assert_left_intact,
    last_error_line,
    run_tool,
    snapshot,
    start_and_kill,
    subprocess_env,
    write_code_running_checkpoint,
)

# demo_vit_tiny shrunk to seconds: 2 blocks of width 64 at 64 px, batch 2, a checkpoint every iteration.
TINY = [
    "MODEL.VIT.DEPTH", "2", "MODEL.VIT.EMBED_DIM", "64", "MODEL.VIT.NUM_HEADS", "2", "MODEL.VIT.IMG_SIZE", "64",
    "MODEL.VIT.WINDOW_SIZE", "2", "MODEL.VIT.GLOBAL_BLOCKS", "[1]", "MODEL.VIT.DROP_PATH", "0.1",
    "MODEL.PYRAMID.OUT_CHANNELS", "32", "MODEL.PYRAMID.SQUARE_PAD", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "INPUT.MIN_SIZE_TRAIN", "(48, 64)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1",
    "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(3,)", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "SEED", "7",
]
TRAIN = "rel_train"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    """4 generated 64 px images with polygons (2 classes): (json, image folder)."""
    json_file, image_dir = make_coco_instances(tmp_path_factory.mktemp("coco"), split="train", num_images=4,
                                               image_size=(64, 64), num_classes=2, seed=0)
    return Path(json_file), Path(image_dir)


def _argv(coco, output: Path, *extra: str) -> list[str]:
    """The tiny run's command line plus ``extra`` (flags go before the KEY VALUE overrides, which
    follow the tiny ones so that they win)."""
    json_file, image_dir = coco
    first_key = next((i for i, a in enumerate(extra) if re.fullmatch(r"[A-Z_]+(\.[A-Z_0-9]+)+", a)), len(extra))
    return ["--config", "demo_vit_tiny", "--register-coco", TRAIN, str(json_file), str(image_dir),
            *extra[:first_key], *TINY, "DATASETS.TRAIN", f"('{TRAIN}',)", "OUTPUT_DIR", str(output),
            *extra[first_key:]]


@pytest.fixture(scope="module")
def good_run(coco, tmp_path_factory) -> Path:
    """A complete 4-iteration run (checkpoints after every iteration): the previous good run."""
    output = tmp_path_factory.mktemp("good") / "out"
    assert run(_argv(coco, output)) == 0
    assert (output / "model_final.pth").is_file() and (output / "last_checkpoint").read_text() == "model_final.pth"
    return output


# ----------------------------------------------------------------------------- the corpus

def _bad_json(coco, tmp: Path, edit) -> list[str]:
    """--register-coco of a copy of the good json after ``edit(data)``, under a fresh name."""
    data = json.loads(coco[0].read_text())
    edit(data)
    path = tmp / "bad.json"
    path.write_text(json.dumps(data))
    return ["--register-coco", f"bad_{tmp.name}", str(path), str(coco[1]), "DATASETS.TRAIN", f"('bad_{tmp.name}',)"]


def _set_polygon(points):
    def edit(data):
        data["annotations"][0]["segmentation"] = points
    return edit


def _broken_image_dir(coco, tmp: Path, size_only: bool = False) -> list[str]:
    """The good dataset with its first image replaced by garbage bytes (or by a smaller image)."""
    images = tmp / "images"
    shutil.copytree(coco[1], images)
    first = sorted(images.iterdir())[0]
    if size_only:
        from PIL import Image
        Image.new("RGB", (32, 40)).save(first, format=first.suffix.lstrip(".").replace("jpg", "jpeg").upper())
    else:
        first.write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    return ["--register-coco", f"img_{tmp.name}", str(coco[0]), str(images), "DATASETS.TRAIN", f"('img_{tmp.name}',)"]


def _checkpoint_with_extra_block(good: Path, tmp: Path) -> str:
    """A whole-model checkpoint of a deeper ViT: the good run's weights plus a third block."""
    state = torch.load(good / "model_final.pth", weights_only=True)["model"]
    for key in [k for k in state if k.startswith("backbone.net.blocks.1.")]:
        state[key.replace("blocks.1.", "blocks.2.")] = state[key].clone()
    torch.save({"model": state}, tmp / "deeper.pth")
    return str(tmp / "deeper.pth")


def _mae_checkpoint(tmp: Path, embed_dim: int = 96) -> str:
    """A backbone-only checkpoint in the official MAE layout, of a ViT 96 wide."""
    vit = create_vit("vit_tiny_patch16", depth=2, embed_dim=embed_dim, num_heads=2, img_size=64)
    torch.save({"model": vit.state_dict()}, tmp / "mae_vit.pth")
    return str(tmp / "mae_vit.pth")


def _truncated(good: Path, tmp: Path) -> str:
    data = (good / "model_final.pth").read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return str(tmp / "cut.pth")


def _misspelled_yaml(tmp: Path) -> list[str]:
    path = tmp / "mine.yaml"
    path.write_text(f'_BASE_: "{REPO / "configs" / "det" / "demo_vit_tiny.yaml"}"\nMODEL:\n  VIT:\n    WINDOW_SIZ: 4\n')
    return ["--config", str(path)]


def _broken_yaml(tmp: Path) -> list[str]:
    path = tmp / "broken.yaml"
    path.write_text(f'_BASE_: "{REPO / "configs" / "det" / "demo_vit_tiny.yaml"}"\nMODEL:\n  VIT: [4\n')
    return ["--config", str(path)]


# (id, argv added to the tiny run's (or a function (coco, good run dir, tmp dir) -> argv), expected text,
#  early: found before the run writes anything; these cases target the good run's output directory,
#  which must stay intact; the others (found while loading or training) write to a fresh directory)
CASES = [
    ("misspelled_override", ["SOLVER.BASE_LRR", "0.1"],
     "Unknown config key 'SOLVER.BASE_LRR' in the command-line overrides; did you mean 'SOLVER.BASE_LR'?", True),
    ("misspelled_yaml_key", lambda c, g, t: _misspelled_yaml(t), "did you mean 'MODEL.VIT.WINDOW_SIZE'?", True),
    ("yaml_syntax", lambda c, g, t: _broken_yaml(t), "broken.yaml is not valid YAML (line 4, column 1:", True),
    ("missing_config", ["--config", "coco_vitb_mea"], "not found", True),
    ("wrong_value_type", ["SOLVER.MAX_ITER", "many"],
     "Config key SOLVER.MAX_ITER in the command-line overrides expects a int", True),
    ("option_after_overrides", ["SOLVER.MAX_ITER", "4", "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "3"],
     "SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 processes", True),  # the option is read, not a key
    ("odd_overrides", ["SOLVER.MAX_ITER"], "Overrides must be KEY VALUE pairs", True),
    ("batch_not_divisible", ["--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "3"],
     "SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 processes", True),
    ("unregistered_dataset", ["DATASETS.TRAIN", "('rel_trian',)"], "Dataset 'rel_trian' is not registered", True),
    ("missing_json", lambda c, g, t: ["--register-coco", "nojson", str(t / "none.json"), str(c[1])],
     "COCO annotation file", True),
    ("missing_image_root", lambda c, g, t: ["--register-coco", "noroot", str(c[0]), str(t / "nowhere")],
     "Image folder", True),
    ("json_syntax", lambda c, g, t: (t / "syntax.json").write_text('{"images": [') and [
        "--register-coco", "syntax", str(t / "syntax.json"), str(c[1]), "DATASETS.TRAIN", "('syntax',)"],
     "is not valid JSON", True),
    ("json_no_annotations", lambda c, g, t: _bad_json(c, t, lambda d: d.pop("annotations")),
     "has no 'annotations' list", True),
    ("image_without_file_name", lambda c, g, t: _bad_json(c, t, lambda d: d["images"][1].pop("file_name")),
     "images entry #1 (id", True),
    ("annotation_unknown_image", lambda c, g, t: _bad_json(c, t, lambda d: d["annotations"][0].update(image_id=999)),
     "points at image_id 999, which is not in 'images'", True),
    ("annotation_unknown_category",
     lambda c, g, t: _bad_json(c, t, lambda d: d["annotations"][0].update(category_id=77)),
     "has category_id 77, which is not in 'categories'", True),
    ("image_file_missing", lambda c, g, t: _bad_json(c, t, lambda d: d["images"][0].update(file_name="gone.png")),
     "lists 1 image(s) missing from", True),
    ("polygon_two_points", lambda c, g, t: _bad_json(c, t, _set_polygon([[1.0, 1.0, 5.0, 5.0]])),
     "has a polygon with 4 coordinates (needs >= 3 x,y points)", True),
    ("polygon_zero_area", lambda c, g, t: _bad_json(c, t, _set_polygon([[1, 1, 5, 5, 9, 9]])),
     "has a polygon of zero area", True),
    ("segmentation_empty", lambda c, g, t: _bad_json(c, t, _set_polygon([])), "has an empty segmentation", True),
    ("weights_missing", lambda c, g, t: ["MODEL.WEIGHTS", str(t / "model_final.pth")],
     "MODEL.WEIGHTS file", True),
    ("vit_weights_missing", lambda c, g, t: ["MODEL.VIT.WEIGHTS", str(t / "mae.pth")],
     "MODEL.VIT.WEIGHTS file", True),
    ("eval_only_without_weights", ["--eval-only"], "--eval-only evaluates MODEL.WEIGHTS, which is empty", True),
    ("new_run_over_previous_run", ["SOLVER.MAX_ITER", "8"],
     "already holds a run (last checkpoint model_final.pth); pass --resume to continue it", True),
    ("weights_truncated", lambda c, g, t: ["MODEL.WEIGHTS", _truncated(g, t)], "is truncated or corrupt", False),
    ("weights_deeper_model", lambda c, g, t: ["MODEL.WEIGHTS", _checkpoint_with_extra_block(g, t)],
     "is for another architecture: only the checkpoint has backbone.net.blocks.2.", False),
    ("weights_backbone_only", lambda c, g, t: ["MODEL.WEIGHTS", _mae_checkpoint(t)],
     "has none of this model's parameters", False),
    ("vit_weights_other_width", lambda c, g, t: ["MODEL.VIT.WEIGHTS", _mae_checkpoint(t)], "mae_vit.pth", False),
    ("image_undecodable", lambda c, g, t: _broken_image_dir(c, t), "DATALOADER.SKIP_UNREADABLE_IMAGES True", False),
    ("eval_image_undecodable", lambda c, g, t: ["--eval-only", *_broken_image_dir(c, t)[:4], "MODEL.WEIGHTS",
                                                 str(g / "model_final.pth"), "DATASETS.TEST", f"('img_{t.name}',)"],
     "cannot be used (not a decodable image)", False),
    ("image_size_differs_from_json", lambda c, g, t: _broken_image_dir(c, t, size_only=True),
     "its size differs from the (height, width) (64, 64) in the json", False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_sentence_and_keeps_the_previous_run(case, coco, good_run, tmp_path):
    name, extra, expected, early = case
    extra = extra(coco, good_run, tmp_path) if callable(extra) else extra
    before = snapshot(good_run)
    log = (good_run / "log.txt").read_bytes()
    code, err = run_tool(run, _argv(coco, good_run if early else tmp_path / "out", *extra))
    assert code == 2
    line = last_error_line(err)
    assert line.startswith("train_det: error: ") and expected in line, line
    assert line.rstrip().endswith((".", "?")) and "\n" not in line
    if early:
        assert "Traceback" not in err
    assert_left_intact(good_run, before, {"log.txt": log})
    assert snapshot(good_run).keys() == before.keys()


def test_corpus_size():
    assert len(CASES) >= 20


def test_unreadable_images_are_skipped_and_counted_when_asked(coco, tmp_path):
    extra = _broken_image_dir(coco, tmp_path)
    assert run(_argv(coco, tmp_path / "out", *extra, "DATALOADER.SKIP_UNREADABLE_IMAGES", "True",
                     "SOLVER.MAX_ITER", "2")) == 0
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Skipped unreadable image" in log and "(not a decodable image); 1 skipped so far" in log
    assert (tmp_path / "out" / "model_final.pth").is_file()


# ----------------------------------------------------------------------------- code-running pickles

@pytest.mark.parametrize("option", ["MODEL.WEIGHTS", "MODEL.VIT.WEIGHTS", "eval-only", "pkl", "resume"])
def test_code_running_pickle_is_refused_through_the_tool(option, coco, tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "out").mkdir()
    checkpoint = write_code_running_checkpoint(
        tmp_path / ("evil.pkl" if option == "pkl" else "out/model_0000001.pth" if option == "resume" else "evil.pth"),
        marker)
    if option == "resume":  # planted as the run's own last checkpoint
        (tmp_path / "out" / "last_checkpoint").write_text("model_0000001.pth")
    if option == "pkl":  # a plain pickle, as Detectron2's model-zoo .pkl files are
        import pickle

        from _reliability import FileCreatingPayload
        checkpoint.write_bytes(pickle.dumps({"model": {"w": 1}, "x": FileCreatingPayload(marker)}))
    extra = {"MODEL.WEIGHTS": ["MODEL.WEIGHTS", str(checkpoint)], "pkl": ["MODEL.WEIGHTS", str(checkpoint)],
             "MODEL.VIT.WEIGHTS": ["MODEL.VIT.WEIGHTS", str(checkpoint)],
             "eval-only": ["--eval-only", "MODEL.WEIGHTS", str(checkpoint)], "resume": ["--resume"]}[option]
    code, err = run_tool(run, _argv(coco, tmp_path / "out", *extra))
    assert code == 2
    line = last_error_line(err)
    assert "Refused to load" in line and "--unsafe-load" in line, line
    assert not marker.exists()


def test_code_running_pickle_is_refused_by_tools_train_det_py(coco, tmp_path):
    """The same through the real command line, in its own process."""
    marker = tmp_path / "pwned"
    checkpoint = write_code_running_checkpoint(tmp_path / "evil.pth", marker)
    argv = _argv(coco, tmp_path / "out", "MODEL.WEIGHTS", str(checkpoint))
    result = subprocess.run([PYTHON, "tools/train_det.py", *argv],
                            cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    line = last_error_line(result.stderr)
    assert line.startswith("train_det: error: Refused to load") and "--unsafe-load" in line, line
    assert not marker.exists()


# ----------------------------------------------------------------------------- crash, resume, NaN

@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(coco, good_run, tmp_path):
    """tools/train_det.py killed with SIGKILL before iteration 3 (after 3 checkpoints), then
    ``--resume``: the final weights equal the uninterrupted run's (``good_run``), bit for bit."""
    output, marker = tmp_path / "out", tmp_path / "at_iter_3"
    script = ("import sys, runpy, reliability_hooks as h; "
              f"h.install_det_hooks(hang_at=3, marker={str(marker)!r}); "
              "sys.argv = ['tools/train_det.py', *sys.argv[1:]]; "
              "runpy.run_path('tools/train_det.py', run_name='__main__')")
    start_and_kill([PYTHON, "-c", script, *_argv(coco, output)], marker, subprocess_env())
    assert (output / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (output / "model_final.pth").exists()
    assert run(_argv(coco, output, "--resume")) == 0
    expected = torch.load(good_run / "model_final.pth", weights_only=True)
    resumed = torch.load(output / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == expected["iteration"] == 3
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    optim_a, optim_b = expected["trainer"]["_trainer"]["optimizer"], resumed["trainer"]["_trainer"]["optimizer"]
    assert optim_a["state"].keys() == optim_b["state"].keys()
    for index, state in optim_a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(optim_b["state"][index][name], value, rtol=0, atol=0)
    assert expected["trainer"]["hooks"] == resumed["trainer"]["hooks"]  # the lr scheduler's state


def test_nan_loss_stops_with_the_iteration_and_terms_and_the_last_checkpoint_loads(coco, tmp_path, monkeypatch):
    from mae_transfer.det.engine import Trainer

    import reliability_hooks

    build_hooks = Trainer.build_hooks
    monkeypatch.setattr(Trainer, "build_hooks", lambda self: build_hooks(self) + reliability_hooks.det_hooks(nan_at=2))
    output = tmp_path / "out"
    code, err = run_tool(run, _argv(coco, output))
    assert code == 2
    line = last_error_line(err)
    assert line.startswith("train_det: error: Training stopped: non-finite loss at iteration 2 (loss_cls=nan"), line
    assert (output / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in output.glob("*.pth")) == ["model_0000000.pth", "model_0000001.pth"]
    monkeypatch.setattr(Trainer, "build_hooks", build_hooks)
    # The kept checkpoint is good: --eval-only --resume loads it (safely) and evaluates finite outputs.
    state = torch.load(output / "model_0000001.pth", weights_only=True)
    assert state["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    from mae_transfer.det.checkpoint import AtomicCheckpointer
    from mae_transfer.det.config import load_config
    cfg = load_config("demo_vit_tiny", TINY + ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    model = Trainer.build_model(cfg)
    AtomicCheckpointer(model, str(output)).resume_or_load("", resume=True)
    loaded = copy.deepcopy(model.state_dict())
    for key, value in state["model"].items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_unsafe_load_is_the_opt_in_the_message_names(coco, good_run, tmp_path):
    """A trusted checkpoint holding a pickled object (not plain weights) loads with --unsafe-load only."""
    from fractions import Fraction

    trusted = tmp_path / "trusted.pth"
    checkpoint = torch.load(good_run / "model_final.pth", weights_only=True)
    torch.save({"model": checkpoint["model"], "note": Fraction(1, 3)}, trusted)
    argv = _argv(coco, tmp_path / "out", "--eval-only", "MODEL.WEIGHTS", str(trusted))
    code, err = run_tool(run, argv)
    assert code == 2 and "--unsafe-load" in last_error_line(err)
    code, err = run_tool(run, argv[:2] + ["--unsafe-load"] + argv[2:])
    assert code == 0, err[-2000:]


def test_resume_skips_a_last_checkpoint_pointer_to_a_missing_file(coco, good_run, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(good_run, output)
    (output / "model_final.pth").unlink()  # last_checkpoint still names it
    (output / "model_0000003.pth").unlink()
    assert run(_argv(coco, output, "--resume")) == 0
    assert "does not exist; resuming from" in (output / "log.txt").read_text()
    expected = torch.load(good_run / "model_final.pth", weights_only=True)["model"]
    final = torch.load(output / "model_final.pth", weights_only=True)["model"]
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=0, msg=key)


def test_checkpoint_write_interrupted_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    """A crash while a checkpoint is written: no partial file under the final name, the pointer still
    names the previous checkpoint, and no temporary file is left behind."""
    from mae_transfer.det.checkpoint import AtomicCheckpointer

    checkpointer = AtomicCheckpointer(torch.nn.Linear(4, 4), str(tmp_path))
    checkpointer.save("model_0000000")
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000001")
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000000.pth")
    checkpointer.resume_or_load("", resume=True)  # reads back
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model_0000000.pth").stat().st_mode & 0o777 == 0o666 & ~umask  # as torch.save's files


def test_options_are_accepted_anywhere_among_the_overrides():
    from mae_transfer.cli.train_det import parse_args

    args = parse_args(["--config", "demo_vit_tiny", "SOLVER.MAX_ITER", "4", "--resume", "SEED", "-1",
                       "--register-coco", "a", "b.json", "c", "--dist-timeout=30", "OUTPUT_DIR", "out"])
    assert args.resume and args.dist_timeout == 30 and args.register_coco == [["a", "b.json", "c"]]
    assert args.opts == ["SOLVER.MAX_ITER", "4", "SEED", "-1", "OUTPUT_DIR", "out"]

"""Reliability of tools/train_seg.py: bad inputs end in one sentence (and a previous run's work
directory survives them), code-running pickles are refused, a SIGKILLed run resumes to the same
weights, a NaN loss stops the run and keeps a checkpoint that resumes.

Most cases call the tool's ``main(argv)`` in this process; the SIGKILLed run is a subprocess.
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mae_transfer.seg  # noqa: F401  (registrations)
from mae_transfer.data import make_ade_semantic

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

CLASSES = ("sky", "ground", "house")
# demo_vit_tiny shrunk further: 4 blocks of width 64, batch 2, 4 iterations, a checkpoint after each.
TINY = [
    "model.backbone.depth=4", "model.backbone.embed_dim=64", "model.backbone.num_heads=2",
    "model.backbone.out_indices=(0,1,2,3)", "model.backbone.drop_path=0.1", "model.neck.in_channels=64",
    "model.decode_head.in_channels=[64,64,64,64]", "model.decode_head.channels=16",
    "model.auxiliary_head.in_channels=64", "model.auxiliary_head.channels=8",
    "train_dataloader.batch_size=2", "train_cfg.max_iters=4", "train_cfg.val_interval=100",
    "default_hooks.checkpoint.interval=1", "default_hooks.checkpoint.max_keep_ckpts=10",
    "default_hooks.logger.interval=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _load_tool():
    return importlib.import_module("mae_transfer.cli.train_seg")


class _Tool:
    """tools/train_seg.py's ``main`` for one run per call, as if each were its own process: MMEngine
    keeps named singletons (visualizer, per-second loggers) that would tie a run to the previous one."""

    def __init__(self):
        self.module = _load_tool()

    def main(self, argv: list[str]) -> int:
        from mmengine.logging import MMLogger
        from mmengine.visualization import Visualizer
        from mmseg.visualization import SegLocalVisualizer

        for manager in (Visualizer, SegLocalVisualizer, MMLogger):
            manager._instance_dict.clear()
        return self.module.main(argv)


@pytest.fixture(scope="module")
def tool():
    return _Tool()


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class ADE20K-layout dataset (4 training, 1 validation image of 64 px) and its class list."""
    root = make_ade_semantic(tmp_path_factory.mktemp("ade"), num_train=4, num_val=1, image_size=(64, 64),
                             num_classes=len(CLASSES), seed=5)
    classes = root.parent / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return root, classes


def _argv(ade, work: Path, *extra: str, options: tuple[str, ...] = (), config: str = "demo_vit_tiny") -> list[str]:
    root, classes = ade
    return [config, "--work-dir", str(work), "--data-root", str(root), "--classes", str(classes), *extra,
            "--cfg-options", *TINY, *options]


@pytest.fixture(scope="module")
def good_run(tool, ade, tmp_path_factory) -> Path:
    """A complete 4-iteration run (a checkpoint after every iteration): the previous good run."""
    work = tmp_path_factory.mktemp("good") / "work"
    code, err = run_tool(tool.main, _argv(ade, work))
    assert code == 0, err[-3000:]
    assert (work / "iter_4.pth").is_file()
    return work


def _copy_dataset(ade, tmp: Path) -> Path:
    root = tmp / "data"
    shutil.copytree(ade[0], root)
    return root


def _dataset_argv(root: Path, ade) -> list[str]:
    return ["--data-root", str(root), "--classes", str(ade[1])]


def _label_of_other_size(ade, tmp: Path) -> list[str]:
    root = _copy_dataset(ade, tmp)
    label = sorted((root / "annotations" / "training").iterdir())[0]
    Image.new("L", (48, 64)).save(label)
    return _dataset_argv(root, ade)


def _label_out_of_range(ade, tmp: Path) -> list[str]:
    root = _copy_dataset(ade, tmp)
    for label in (root / "annotations" / "training").iterdir():
        values = np.array(Image.open(label))
        values[:4, :4] = 9
        Image.fromarray(values).save(label)
    return _dataset_argv(root, ade)


def _undecodable_image(ade, tmp: Path) -> list[str]:
    root = _copy_dataset(ade, tmp)
    for image in (root / "images" / "training").iterdir():
        image.write_bytes(b"\xff\xd8\xff garbage")
    return _dataset_argv(root, ade)


def _image_without_label(ade, tmp: Path) -> list[str]:
    root = _copy_dataset(ade, tmp)
    sorted((root / "annotations" / "training").iterdir())[1].unlink()
    return _dataset_argv(root, ade)


def _checkpoint_with_extra_block(good: Path, tmp: Path) -> str:
    """A whole-model checkpoint of a deeper ViT: the good run's weights plus a fifth block."""
    checkpoint = torch.load(good / "iter_4.pth", weights_only=True)
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith("backbone.net.blocks.3.")]:
        state[key.replace("blocks.3.", "blocks.4.")] = state[key].clone()
    torch.save({"state_dict": state, "meta": {}}, tmp / "deeper.pth")
    return str(tmp / "deeper.pth")


def _truncated(good: Path, tmp: Path) -> str:
    data = (good / "iter_4.pth").read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return str(tmp / "cut.pth")


def _resume_from_corrupt(good: Path, tmp: Path) -> list[str]:
    work = tmp / "work"
    work.mkdir()
    (work / "iter_2.pth").write_bytes((good / "iter_2.pth").read_bytes()[:1000])
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    return ["--resume", "--work-dir", str(work)]


def _misspelled_config(tmp: Path) -> str:
    config = tmp / "mine.py"
    config.write_text(f"_base_ = [{str(REPO / 'configs' / 'seg' / 'demo_vit_tiny.py')!r}]\n"
                      "model = dict(backbone=dict(drop_pth=0.2))\n")
    return str(config)


def _broken_config(tmp: Path) -> str:
    config = tmp / "broken.py"
    config.write_text(f"_base_ = [{str(REPO / 'configs' / 'seg' / 'demo_vit_tiny.py')!r}]\n"
                      "model = dict(backbone=dict(drop_path=0.2)\n")
    return str(config)


def _case(*flags: str, options: tuple[str, ...] = (), config: str = "demo_vit_tiny", dataset: bool = True):
    return dict(flags=list(flags), options=tuple(options), config=config, dataset=dataset)


# (id, function (ade, good run dir, tmp dir) -> the case's arguments (see _case), expected text,
#  early: found before the run writes anything; these target the good run's work dir, which must stay
#  intact; the others (found while loading or training) use a fresh work dir)
CASES = [
    ("misspelled_cfg_option", lambda a, g, t: _case(options=("model.backbone.drop_pth=0.2",)),
     "did you mean 'model.backbone.drop_path'?", True),
    ("misspelled_key_in_config_file", lambda a, g, t: _case(config=_misspelled_config(t)),
     "Unknown key 'drop_pth' in model.backbone (MAETransferViT) of config", True),
    ("python_syntax_in_config_file", lambda a, g, t: _case(config=_broken_config(t)),
     "broken.py is not valid Python (line 2:", True),
    ("bad_list_index", lambda a, g, t: _case(options=("model.decode_head.in_channels.7=3",)),
     "is a list of 4; '7' is not a valid index", True),
    ("missing_config", lambda a, g, t: _case(config="demo_vit_tiyn"), "; did you mean 'demo_vit_tiny'?", True),
    ("data_root_without_classes", lambda a, g, t: _case("--data-root", str(a[0]), dataset=False),
     "--data-root and --classes go together", True),
    ("data_root_missing_folders", lambda a, g, t: _case("--data-root", str(t)), "is missing", True),
    ("classes_file_missing", lambda a, g, t: _case("--classes", str(t / "none.txt")), "does not exist", True),
    ("classes_file_empty", lambda a, g, t: (t / "c.txt").write_text("\n") and _case("--classes", str(t / "c.txt")),
     "is empty", True),
    ("classes_repeated",
     lambda a, g, t: (t / "c.txt").write_text("sky\nsky\n") and _case("--classes", str(t / "c.txt")),
     "repeats a name", True),
    ("image_without_label", lambda a, g, t: _case(*_image_without_label(a, t)), "1 of 4 images in", True),
    ("eval_checkpoint_missing", lambda a, g, t: _case("--eval-only", str(t / "iter_9.pth")),
     "(--eval-only) does not exist", True),
    ("pretrained_missing", lambda a, g, t: _case(options=("model.backbone.pretrained=/nowhere/mae.pth",)),
     "/nowhere/mae.pth (model.backbone.pretrained) does not exist", True),
    ("launcher_without_env", lambda a, g, t: _case("--launcher", "pytorch"),
     "--launcher pytorch needs the environment variable", True),
    ("new_run_over_previous_run", lambda a, g, t: _case(),
     "already holds a run (last checkpoint iter_4.pth); pass --resume", True),
    ("eval_checkpoint_truncated", lambda a, g, t: _case("--eval-only", _truncated(g, t)), "is truncated or corrupt",
     True),
    ("eval_checkpoint_deeper_model", lambda a, g, t: _case("--eval-only", _checkpoint_with_extra_block(g, t)),
     "is for another architecture: only the checkpoint has backbone.net.blocks.4.", False),
    ("resume_from_corrupt_checkpoint", lambda a, g, t: _case(*_resume_from_corrupt(g, t)), "is truncated or corrupt",
     True),
    ("pretrained_truncated", lambda a, g, t: _case(options=(f"model.backbone.pretrained={_truncated(g, t)}",)),
     "truncated or corrupt", True),
    ("label_other_size", lambda a, g, t: _case(*_label_of_other_size(a, t)), "is 48x64 pixels but its image", False),
    ("label_out_of_range", lambda a, g, t: _case(*_label_out_of_range(a, t)),
     "contains class id 9 but the dataset has 3 classes", False),
    ("image_undecodable", lambda a, g, t: _case(*_undecodable_image(a, t)), "cannot be used", False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_sentence_and_keeps_the_previous_run(case, tool, ade, good_run, tmp_path):
    name, make, expected, early = case
    args = make(ade, good_run, tmp_path)
    work = good_run if early else tmp_path / "fresh"
    root, classes = ade
    argv = [args["config"], "--work-dir", str(work)]
    argv += ["--data-root", str(root), "--classes", str(classes)] if args["dataset"] else []
    argv += args["flags"] + ["--cfg-options", *TINY, *args["options"]]  # later flags win
    before = snapshot(good_run)
    code, err = run_tool(tool.main, argv)
    assert code == 2
    line = last_error_line(err)
    assert line.startswith("train_seg: error: ") and expected in line, line
    assert line.rstrip().endswith((".", "?", ")")), line
    if early:
        assert "Traceback" not in err
    assert_left_intact(good_run, before, {})
    assert snapshot(good_run).keys() == before.keys()


def test_corpus_size():
    assert len(CASES) >= 20


def test_unreadable_images_are_skipped_and_counted_when_asked(tool, ade, tmp_path, caplog):
    root = _copy_dataset(ade, tmp_path)
    sorted((root / "images" / "training").iterdir())[0].write_bytes(b"\xff\xd8\xff garbage")
    work = tmp_path / "work"
    code, err = run_tool(tool.main, _argv(ade, work, "--skip-unreadable-images", *_dataset_argv(root, ade),
                                          options=("train_cfg.max_iters=2",)))
    assert code == 0, err[-2000:]
    skipped = [r.getMessage() for r in caplog.records if "Skipped unreadable image" in r.getMessage()]
    assert skipped and "ADE_train_00000001.jpg" in skipped[0] and "1 skipped so far" in skipped[0]
    assert (work / "iter_2.pth").is_file()


# ----------------------------------------------------------------------------- code-running pickles

@pytest.mark.parametrize("option", ["eval-only", "pretrained", "resume"])
def test_code_running_pickle_is_refused_through_the_tool(option, tool, ade, tmp_path):
    marker = tmp_path / "pwned"
    work = tmp_path / "work"
    work.mkdir()
    checkpoint = write_code_running_checkpoint(work / "iter_2.pth", marker)
    extra, options = {
        "eval-only": (["--eval-only", str(checkpoint)], ()),
        "pretrained": ([], (f"model.backbone.pretrained={checkpoint}",)),
        "resume": (["--resume"], ()),
    }[option]
    if option == "resume":
        (work / "last_checkpoint").write_text(str(checkpoint))
    code, err = run_tool(tool.main, _argv(ade, work, *extra, options=options))
    assert code == 2
    line = last_error_line(err)
    assert "--unsafe-load" in line and str(checkpoint) in line, line
    assert not marker.exists()


def test_unsafe_load_reaches_the_backbone_weights(tool, ade, tmp_path):
    """--unsafe-load is the opt-in the message names: it lets a trusted pickle through to the backbone."""
    from mae_transfer.seg.config import prepare_config
    from mae_transfer.seg.guards import check_inputs

    cfg = prepare_config("demo_vit_tiny", cfg_options={"model.backbone.pretrained": "x.pth"},
                         work_dir=str(tmp_path), unsafe_load=True)
    cfg.model.backbone.pretrained = None
    check_inputs(cfg)
    assert cfg.model.backbone.unsafe_load is True


# ----------------------------------------------------------------------------- crash, resume, NaN

def _config_with_hooks(tmp: Path, hooks: str, module: str) -> str:
    config = tmp / "with_hooks.py"
    config.write_text(f"_base_ = [{str(REPO / 'configs' / 'seg' / 'demo_vit_tiny.py')!r}]\n"
                      f"custom_imports = dict(imports=[{module!r}], allow_failed_imports=False)\n"
                      f"custom_hooks = [{hooks}]\n")
    return str(config)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tool, ade, good_run, tmp_path):
    """tools/train_seg.py killed with SIGKILL before iteration 3 (after 2 checkpoints), then
    ``--resume``: the final weights equal the uninterrupted run's (``good_run``), bit for bit."""
    work, marker = tmp_path / "work", tmp_path / "at_iter_3"
    config = _config_with_hooks(tmp_path, f"dict(type='HangBeforeIterHook', at=3, marker={str(marker)!r})",
                                "reliability_hooks")
    start_and_kill([PYTHON, "tools/train_seg.py", *_argv(ade, work, config=config)], marker, subprocess_env())
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_1.pth", "iter_2.pth"]
    code, err = run_tool(tool.main, _argv(ade, work, "--resume"))
    assert code == 0, err[-3000:]
    expected = torch.load(good_run / "iter_4.pth", weights_only=True)
    resumed = torch.load(work / "iter_4.pth", weights_only=True)
    assert resumed["meta"]["iter"] == expected["meta"]["iter"] == 4
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(resumed["optimizer"]["state"][index][name], value, rtol=0, atol=0)
    assert expected["param_schedulers"] == resumed["param_schedulers"]


def test_nan_loss_stops_with_the_iteration_and_terms_and_the_checkpoint_resumes(tool, ade, tmp_path):
    work = tmp_path / "work"
    config = _config_with_hooks(tmp_path, "dict(type='InjectNaNHook', at=3)", "seg_test_hooks")
    code, err = run_tool(tool.main, _argv(ade, work, config=config, options=("train_cfg.max_iters=3",)))
    assert code == 2
    line = last_error_line(err)
    assert line.startswith("train_seg: error: Non-finite loss at iteration 3 (") and "=nan" in line, line
    assert "last good checkpoint:" in line and "iter_2.pth" in line
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_1.pth", "iter_2.pth"]
    state = torch.load(work / "iter_2.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # The kept checkpoint resumes: the same run without the injected NaN goes on to the end.
    code, err = run_tool(tool.main, _argv(ade, work, "--resume", options=("train_cfg.max_iters=3",)))
    assert code == 0, err[-3000:]
    assert (work / "iter_3.pth").is_file()

"""Multi-process runs of both tools on CPU (gloo): resume after kill -9 of the whole process group,
a NaN on one rank only, two "machines" on one host, a rank killed mid-run.

Every run is a real subprocess (tools/train_det.py through Detectron2's ``launch``, tools/train_seg.py
through ``torch.distributed.run``) on the tiny configs of the reliability tests: 2 processes,
drop path 0.1, random flips (and multi-scale resize / random crops), a checkpoint every iteration.
The uninterrupted reference of each framework is the two-machine run (same world size and ranks).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_reliability_det import TINY as DET_TINY
from test_reliability_seg import CLASSES
from test_reliability_seg import TINY as SEG_TINY

from mae_transfer.data import make_ade_semantic, make_coco_instances

from _reliability import PYTHON, REPO, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RUN_TIMEOUT = 300  # seconds; a hang fails the test instead of the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """A tool in its own process group (so the whole group can be killed), output to ``log``."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=REPO, env=env or subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise AssertionError(f"timed out:\n{log.read_text(errors='replace')[-3000:]}") from None
    return code, log.read_text(errors="replace")


def _wait_for(marker: Path, procs: list[subprocess.Popen], log: Path, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    _kill_group(p)
            raise AssertionError(f"the run never reached the kill point:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def _descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (from /proc), children before grandchildren."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue  # not a process, or it ended while reading
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process below it, no cleanup at all. torch elastic starts its
    ranks in sessions of their own, so killing the launcher's process group alone would leave them
    running: they are collected from /proc before the kill and killed one by one."""
    victims = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in victims), "a process of the killed run survived SIGKILL"


# ----------------------------------------------------------------------------- detection

DET_TRAIN = "dist_train"
DET_SCRIPT = ("import sys, reliability_hooks as h; sys.exit(h.run_det_tool_with_env_hooks(sys.argv[1:]))")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[str, str]:
    json_file, image_dir = make_coco_instances(tmp_path_factory.mktemp("coco"), split="train", num_images=4,
                                               image_size=(64, 64), num_classes=2, seed=0)
    return str(json_file), str(image_dir)


def _det_argv(coco, output: Path, *options: str, workers: int = 0) -> list[str]:
    """Options go after the KEY VALUE overrides on purpose (accepted anywhere)."""
    return [PYTHON, "-c", DET_SCRIPT, "--config", "demo_vit_tiny", "--register-coco", DET_TRAIN, *coco, *DET_TINY,
            "DATASETS.TRAIN", f"('{DET_TRAIN}',)", "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", str(output),
            *options]


def _det_env(**hooks) -> dict:
    env = subprocess_env()
    if hooks:
        env["MAE_TRANSFER_TEST_DET_HOOKS"] = json.dumps(hooks)
    return env


def _digests(log: Path) -> dict[int, str]:
    return {int(i): d for i, d in re.findall(r"Weights digest at iteration (\d+): (\w+)", log.read_text())}


def _two_det_machines(coco, tmp: Path, hooks: dict | None = None, timeout_s: int = 120):
    port = _free_port()
    return [_start(_det_argv(coco, tmp / f"machine{m}", "--num-gpus", "1", "--num-machines", "2",
                             "--machine-rank", str(m), "--dist-url", f"tcp://127.0.0.1:{port}",
                             "--dist-timeout", str(timeout_s)),
                   env=_det_env(**(hooks or {})), log=tmp / f"machine{m}.log") for m in (0, 1)]


@pytest.fixture(scope="module")
def det_two_machines(coco, tmp_path_factory) -> Path:
    """4 iterations as two "machines" of one process each: the uninterrupted 2-process reference."""
    tmp = tmp_path_factory.mktemp("det_nodes")
    procs = _two_det_machines(coco, tmp)
    for m, proc in enumerate(procs):
        code, out = _finish(proc, tmp / f"machine{m}.log")
        assert code == 0, out[-3000:]
    return tmp


def test_det_two_machines_finish_with_identical_weights(det_two_machines):
    node0 = _digests(det_two_machines / "machine0" / "log.txt")
    node1 = _digests(det_two_machines / "machine1" / "log.txt.rank1")
    assert set(node0) == set(node1) == {0, 4}
    assert node0 == node1 and node0[0] != node0[4]
    assert "World size: 2" in (det_two_machines / "machine0" / "log.txt").read_text()


def test_det_kill9_of_the_process_group_then_resume_equals_uninterrupted(coco, det_two_machines, tmp_path):
    output, marker = tmp_path / "out", tmp_path / "at_iter_3"
    log = tmp_path / "run.log"
    # With a loader worker here and none in the reference: the batches do not depend on the workers.
    proc = _start(_det_argv(coco, output, "--num-gpus", "2", workers=1),
                  env=_det_env(hang_at=3, marker=str(marker), rank=0), log=log)
    _wait_for(marker, [proc], log)
    _kill_group(proc)
    assert (output / "last_checkpoint").read_text() == "model_0000002.pth"
    states = torch.load(output / "model_0000002.pth", weights_only=True)["trainer"]["resume"]["rng_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])  # one per rank

    code, out = _finish(_start(_det_argv(coco, output, "--num-gpus", "2", "--resume", workers=1), log=log), log)
    assert code == 0, out[-3000:]
    expected = torch.load(det_two_machines / "machine0" / "model_final.pth", weights_only=True)["model"]
    resumed = torch.load(output / "model_final.pth", weights_only=True)["model"]
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_det_nan_on_one_rank_stops_both_before_the_step(coco, tmp_path):
    output, log = tmp_path / "out", tmp_path / "run.log"
    code, out = _finish(_start(_det_argv(coco, output, "--num-gpus", "2"), env=_det_env(nan_at=2, rank=1), log=log),
                        log, timeout=180)
    assert code == 2
    assert "error: Training stopped: non-finite loss at iteration 2 (loss_cls=nan" in out, out[-3000:]
    assert "last good checkpoint:" in out and "model_0000001.pth" in out
    assert "loss_cls=nan; all terms: loss_cls=nan" in (output / "log.txt").read_text()  # rank 0 saw rank 1's NaN
    assert sorted(p.name for p in output.glob("*.pth")) == ["model_0000000.pth", "model_0000001.pth"]
    state = torch.load(output / "model_0000001.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_det_killed_rank_ends_the_survivor_with_a_message_within_the_timeout(coco, tmp_path):
    marker = tmp_path / "rank1_at_2"
    timeout_s = 20
    procs = _two_det_machines(coco, tmp_path, hooks=dict(hang_at=2, marker=str(marker), rank=1), timeout_s=timeout_s)
    _wait_for(marker, procs, tmp_path / "machine0.log")
    _kill_group(procs[1])
    killed = time.monotonic()
    code, out = _finish(procs[0], tmp_path / "machine0.log", timeout=timeout_s + 60)
    assert time.monotonic() - killed < timeout_s + 30
    assert code == 2
    assert "Rank 0 stopped: lost contact with rank 1 of 2" in out, out[-3000:]


# ----------------------------------------------------------------------------- segmentation

@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> tuple[Path, Path]:
    root = make_ade_semantic(tmp_path_factory.mktemp("ade"), num_train=4, num_val=1, image_size=(64, 64),
                             num_classes=len(CLASSES), seed=5)
    classes = root.parent / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return root, classes


def _seg_config(tmp: Path, hooks: str = "") -> str:
    config = tmp / "seg_cfg.py"
    config.write_text(f"_base_ = [{str(REPO / 'configs' / 'seg' / 'demo_vit_tiny.py')!r}]\n"
                      "custom_imports = dict(imports=['seg_test_hooks', 'reliability_hooks'], "
                      "allow_failed_imports=False)\n"
                      f"custom_hooks = [dict(type='DumpRankWeightsHook'), {hooks}]\n")
    return str(config)


def _torchrun(ade, work: Path, config: str, *extra: str, nodes: tuple[int, int] | None = None,
              port: int | None = None) -> list[str]:
    root, classes = ade
    launch = ["--nproc_per_node", "2", "--master_port", str(port or _free_port())] if nodes is None else [
        "--nnodes", "2", "--node_rank", str(nodes[0]), "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
        "--master_port", str(port)]
    return [PYTHON, "-m", "torch.distributed.run", *launch, "tools/train_seg.py", config, "--launcher", "pytorch",
            "--work-dir", str(work), "--data-root", str(root), "--classes", str(classes), "--dist-timeout", "120",
            *extra, "--cfg-options", *SEG_TINY, "train_dataloader.num_workers=1"]


@pytest.fixture(scope="module")
def seg_two_machines(ade, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("seg_nodes")
    config, port = _seg_config(tmp), _free_port()
    procs = [_start(_torchrun(ade, tmp / f"node{n}", config, nodes=(n, 2), port=port), log=tmp / f"node{n}.log")
             for n in (0, 1)]
    for n, proc in enumerate(procs):
        code, out = _finish(proc, tmp / f"node{n}.log")
        assert code == 0, out[-3000:]
    return tmp


def test_seg_two_machines_finish_with_identical_weights(seg_two_machines):
    node0 = torch.load(seg_two_machines / "node0" / "rank0_weights.pt")
    node1 = torch.load(seg_two_machines / "node1" / "rank1_weights.pt")
    assert node0.keys() == node1.keys()
    for name in node0:
        torch.testing.assert_close(node0[name], node1[name], rtol=0, atol=0, msg=name)


def test_seg_kill9_of_the_process_group_then_resume_equals_uninterrupted(ade, seg_two_machines, tmp_path):
    work, marker, log = tmp_path / "work", tmp_path / "at_iter_3", tmp_path / "run.log"
    config = _seg_config(tmp_path, f"dict(type='HangBeforeIterHook', at=3, marker={str(marker)!r})")
    proc = _start(_torchrun(ade, work, config), log=log)
    _wait_for(marker, [proc], log)
    time.sleep(1.0)  # both ranks reach the hang (rank 1 may still be finishing iteration 2's checkpoint hook)
    _kill_group(proc)
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_1.pth", "iter_2.pth"]
    states = torch.load(work / "iter_2.pth", weights_only=True)["rng_state"]["per_rank"]
    assert len(states) == 2

    code, out = _finish(_start(_torchrun(ade, work, _seg_config(tmp_path), "--resume"), log=log), log)
    assert code == 0, out[-3000:]
    expected = torch.load(seg_two_machines / "node0" / "iter_4.pth", weights_only=True)["state_dict"]
    resumed = torch.load(work / "iter_4.pth", weights_only=True)["state_dict"]
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_seg_nan_on_one_rank_stops_both_before_the_step(ade, tmp_path):
    work, log = tmp_path / "work", tmp_path / "run.log"
    config = _seg_config(tmp_path, "dict(type='InjectNaNHook', at=3, rank=1)")
    code, out = _finish(_start(_torchrun(ade, work, config), log=log), log, timeout=180)
    assert code != 0
    errors = [line for line in out.splitlines() if "train_seg: error: Non-finite loss at iteration 3 (" in line]
    assert len(errors) == 2 and len(set(errors)) == 1, out[-3000:]  # both ranks, the same message
    assert "on rank 1" in errors[0] and "=nan" in errors[0] and "iter_2.pth" in errors[0]
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_1.pth", "iter_2.pth"]
    state = torch.load(work / "iter_2.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

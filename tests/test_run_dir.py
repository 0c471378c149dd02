"""The run-directory rules Detectron2 and MMEngine runs share (mae_transfer.utils.run_dir), and the
atomic writer for frameworks' own save functions (mae_transfer.utils.fileio.atomic_write_file)."""
from __future__ import annotations

import pytest

from mae_transfer.errors import UserError
from mae_transfer.utils.fileio import atomic_write_file
from mae_transfer.utils.run_dir import is_local, last_checkpoint, refuse_earlier_run

DET, SEG = r"model_(\d+)\.pth", r"iter_(\d+)\.pth"


def test_is_local():
    assert is_local("ckpt/model.pth") and is_local("/abs/model.pth")
    assert not any(is_local(p) for p in ("", None, "https://x/y.pth", "s3://bucket/y.pth", 3))


def test_detectron2_pointer_is_a_base_name_and_model_final_is_newest(tmp_path):
    for name in ("model_0000009.pth", "model_0000019.pth", ".model_0000029.pth.abc.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert last_checkpoint(tmp_path, DET, final="model_final.pth") == tmp_path / "model_0000019.pth"
    (tmp_path / "model_final.pth").write_bytes(b"x")
    assert last_checkpoint(tmp_path, DET, final="model_final.pth") == tmp_path / "model_final.pth"
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    assert last_checkpoint(tmp_path, DET, final="model_final.pth") == tmp_path / "model_0000009.pth"


def test_mmengine_pointer_is_a_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work_dirs" / "demo"
    work.mkdir(parents=True)
    for n in (2, 10):
        (work / f"iter_{n}.pth").write_bytes(b"x")
    assert last_checkpoint("work_dirs/demo", SEG).resolve() == work / "iter_10.pth"  # numeric order
    (work / "last_checkpoint").write_text("work_dirs/demo/iter_2.pth")  # as MMEngine writes it
    assert last_checkpoint("work_dirs/demo", SEG).resolve() == work / "iter_2.pth"


def test_a_new_run_refuses_a_directory_with_a_run(tmp_path):
    refuse_earlier_run(tmp_path, what="Work dir", choose="--work-dir")  # empty: fine
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_4.pth"))
    with pytest.raises(UserError, match=r"already holds a run \(last checkpoint iter_4.pth\); pass --resume"):
        refuse_earlier_run(tmp_path, what="Work dir", choose="--work-dir")


def test_atomic_write_file_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "iter_1.pth"
    atomic_write_file(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_file(target, broken)
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["iter_1.pth"]

"""tools/convert_checkpoint.py: prints the layout and report, writes weights that reload cleanly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from mae_transfer.checkpoints import load_pretrained

from _checkpoint_cases import d2_vitdet, image, our_vitdet

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "convert_checkpoint.py"
VITDET_ARGS = ["--model", "vit_tiny_patch16", "--img-size", "128", "--window-size", "4", "--global-blocks", "1",
               "--rel-pos", "decomposed", "--no-cls-token", "--set", "depth=2"]


def test_converts_vitdet_checkpoint_and_output_reloads(tmp_path):
    sfp = d2_vitdet()
    src = tmp_path / "vitdet.pth"
    torch.save({"model": {"backbone." + k: v for k, v in sfp.state_dict().items()}, "iteration": 5}, src)
    out = tmp_path / "converted.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(TOOL), str(src), *VITDET_ARGS, "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("layout: vitdet (ViTDet / Detectron2")
    assert "loaded: " in result.stdout and "ignored: <iteration>" in result.stdout
    assert f"to {out}" in result.stdout

    model = our_vitdet()
    report = load_pretrained(model, out)
    assert report.layout == "mae_transfer" and report.unexplained == []
    x = image(128)
    with torch.no_grad():
        ours = model(x)
        theirs = list(sfp(x).values())
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ours, theirs))


def test_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    from mae_transfer.cli import convert_checkpoint as tool

    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, bad)
    assert tool.main([str(bad), "--model", "vit_tiny_patch16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convert_checkpoint: error: Checkpoint") and "not a ViT checkpoint" in err and "\n" not in err

"""Reading checkpoint files: URL download + cache, safety against code-running pickles,
Detectron2 .pkl files, truncated files."""
from __future__ import annotations

import argparse
import http.server
import pickle
import threading
from functools import partial

import numpy as np
import pytest
import torch

from mae_transfer.checkpoints import (
    CheckpointReadError,
    UnsafeCheckpointError,
    load_pretrained,
    read_checkpoint,
    save_checkpoint,
)
from mae_transfer.models import create_vit

DIM = 64


def tiny_vit():
    return create_vit("vit_tiny_patch16", embed_dim=DIM, depth=1, num_heads=2, img_size=32, pretrain_img_size=32)


def tiny_state_dict(seed=0):
    torch.manual_seed(seed)
    return {k: v + 0.01 for k, v in tiny_vit().state_dict().items()}


class CreatesFile:
    """Unpickling this object would create a file: arbitrary code execution in miniature."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (a free port); yields (base URL, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests, server
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_once_cached_and_loaded(http_server, tmp_path, monkeypatch):
    base, root, requests, server = http_server
    monkeypatch.setenv("MAE_TRANSFER_CACHE", str(tmp_path / "cache"))
    sd = tiny_state_dict()
    torch.save({"model": sd}, root / "mae_pretrain_tiny.pth")
    url = f"{base}/mae_pretrain_tiny.pth"

    model = tiny_vit()
    report = load_pretrained(model, url)
    assert report.layout == "mae" and report.unexplained == []
    assert torch.equal(model.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    cached = list((tmp_path / "cache" / "checkpoints").iterdir())
    assert [p.name.endswith("-mae_pretrain_tiny.pth") for p in cached] == [True]  # no partial files left
    assert requests == ["/mae_pretrain_tiny.pth"]

    server.shutdown()  # the second load must come from the cache
    load_pretrained(tiny_vit(), url)
    assert requests == ["/mae_pretrain_tiny.pth"]


def test_bad_url_fails_with_one_sentence(http_server, tmp_path, monkeypatch):
    base, *_ = http_server
    monkeypatch.setenv("MAE_TRANSFER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointReadError, match=r"Could not download checkpoint .*missing\.pth .*404"):
        read_checkpoint(f"{base}/missing.pth")
    assert not list((tmp_path / "cache" / "checkpoints").iterdir())


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / ("evil.pth" if writer == "torch" else "evil.pkl")
    if writer == "torch":
        torch.save({"model": tiny_state_dict(), "extra": CreatesFile(marker)}, path)
    else:  # Detectron2-style .pkl: numpy arrays
        weights = {k: v.numpy() for k, v in tiny_state_dict().items()}
        path.write_bytes(pickle.dumps({"model": weights, "extra": CreatesFile(marker)}))
    with pytest.raises(UnsafeCheckpointError) as err:
        load_pretrained(tiny_vit(), path)
    message = str(err.value)
    assert "unsafe=True" in message and "--unsafe-load" in message and str(path) in message
    assert "open" in message  # names the offending global
    assert not marker.exists()
    # the explicit opt-in loads it (and, as promised, runs its code)
    report = load_pretrained(tiny_vit(), path, unsafe=True)
    assert report.layout == "mae" and marker.exists()


def test_training_checkpoint_with_args_namespace_loads_safely(tmp_path):
    path = tmp_path / "checkpoint-399.pth"
    torch.save({"model": tiny_state_dict(), "epoch": 399, "args": argparse.Namespace(lr=1e-3, model="mae")}, path)
    report = load_pretrained(tiny_vit(), path)
    assert report.unexplained == [] and report.ignored["<args>"].startswith("training state")


def test_detectron2_pkl_with_numpy_arrays(tmp_path):
    sd = tiny_state_dict()
    d2 = {"model": {"backbone.net." + k: v.numpy() for k, v in sd.items() if k != "cls_token"},
          "__author__": "Detectron2 model zoo", "matching_heuristics": True}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(d2))
    model = tiny_vit()
    report = load_pretrained(model, path)
    assert report.layout == "vitdet"
    assert torch.equal(model.pos_embed, sd["pos_embed"])
    assert "cls_token" in report.explained  # ViTDet has none


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".pkl"])
def test_truncated_file_fails_with_one_sentence(tmp_path, suffix):
    sd = tiny_state_dict()
    good = tmp_path / f"good{suffix}"
    if suffix == ".pkl":
        good.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in sd.items()}}))
    else:
        save_checkpoint(sd, good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointReadError, match=r"(truncated|corrupt).*(download or copy it again)") as err:
        read_checkpoint(bad)
    assert str(bad) in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointReadError, match=r"does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_checkpoint_round_trip(tmp_path, suffix):
    sd = tiny_state_dict()
    path = save_checkpoint(sd, tmp_path / f"out{suffix}", {"source_layout": "mae"})
    loaded = read_checkpoint(path)
    tensors = loaded["model"] if suffix == ".pth" else loaded
    assert sorted(tensors) == sorted(sd) and all(torch.equal(tensors[k], sd[k]) for k in sd)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temporary left
    assert np.isclose(float(tensors["pos_embed"].sum()), float(sd["pos_embed"].sum()))

"""Shipped recipes against the reference code that produced their published numbers.

* the optimizers of coco_vitb_mae / coco_vitl_mae against Detectron2's own
  ``get_default_optimizer_params`` + ``get_vit_lr_decay_rate``, called as the ViTDet LazyConfigs call
  them, on our model (Detectron2's function takes any module);
* the optimizer of ade20k_vitb_mae against MMSeg's ``LayerDecayOptimizerConstructor`` on the segmentor
  MMSeg builds from its own MAE config, tensor names mapped;
* ``tools/diff_recipe.py`` on the four configs with a reference: nothing but the listed deviations,
  and an injected difference is reported with exit status 1.

The references are built on the CPU (ViT-L: some seconds); all tests here are marked slow.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch

pytestmark = pytest.mark.slow

# config -> (ViTDet LazyConfig, layer decay, depth)
DET_CASES = {
    "coco_vitb_mae": ("COCO/mask_rcnn_vitdet_b_100ep.py", 0.7, 12),
    "coco_vitl_mae": ("COCO/mask_rcnn_vitdet_l_100ep.py", 0.8, 24),
}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch, one_thread):
    """The ViTDet configs are extracted from the Detectron2 tarball into a test-local cache."""
    monkeypatch.setenv("MAE_TRANSFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _per_tensor(groups, model: torch.nn.Module, base_lr: float, default_wd: float) -> dict[str, tuple]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g.get("lr", base_lr) / base_lr, g.get("weight_decay", default_wd))
            for g in groups for p in g["params"]}


@pytest.mark.parametrize("config", sorted(DET_CASES))
def test_coco_optimizer_equals_detectron2_vitdet_per_tensor(config):
    from detectron2.modeling import build_model
    from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
    from detectron2.solver.build import get_default_optimizer_params

    from mae_transfer.det import load_config
    from mae_transfer.det.optimizer import build_optimizer
    from mae_transfer.det.recipe import load_reference

    lazy_name, decay, depth = DET_CASES[config]
    # the arguments below are the ones the reference LazyConfig passes
    lazy = load_reference(lazy_name)
    assert lazy.optimizer.params.weight_decay_norm == 0.0
    assert dict(lazy.optimizer.params.overrides) == {"pos_embed": {"weight_decay": 0.0}}
    assert lazy.optimizer.params.lr_factor_func.keywords == {"lr_decay_rate": decay, "num_layers": depth}
    base_lr, wd = lazy.optimizer.lr, lazy.optimizer.weight_decay

    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.VIT.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", "80"])
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_RULE) == (base_lr, wd, "vitdet")
    model = build_model(cfg)
    ours = _per_tensor(build_optimizer(cfg, model).param_groups, model, base_lr, wd)
    reference = _per_tensor(get_default_optimizer_params(
        model, base_lr=base_lr, weight_decay=wd, weight_decay_norm=0.0, overrides={"pos_embed": {"weight_decay": 0.0}},
        lr_factor_func=partial(get_vit_lr_decay_rate, lr_decay_rate=decay, num_layers=depth)), model, base_lr, wd)

    assert ours.keys() == reference.keys() == {n for n, _ in model.named_parameters()}
    for name, (scale, decay_) in reference.items():
        assert ours[name] == (pytest.approx(scale, rel=1e-12), decay_), name
    # what makes the rule Detectron2's: decayed biases, rel_pos and channel LayerNorms
    net = "backbone.net.blocks.0."
    assert ours[f"{net}attn.qkv.bias"][1] == ours[f"{net}attn.rel_pos_h"][1] == wd
    assert ours["backbone.simfp_2.1.weight"][1] == wd and ours[f"{net}norm1.weight"][1] == 0.0
    assert len(ours) == {12: 245, 24: 413}[depth]


def test_ade20k_optimizer_equals_mmseg_layer_decay_constructor():
    from mmengine.optim import build_optim_wrapper

    from mae_transfer.seg import recipe
    from mae_transfer.seg.config import load_config

    ref_cfg = recipe.load_reference(recipe.REFERENCES["ade20k_vitb_mae"])
    assert ref_cfg.optim_wrapper.constructor == "LayerDecayOptimizerConstructor"
    ref_model_cfg = ref_cfg.model.deepcopy()
    ref_model_cfg.pretrained = None
    reference_model = recipe._build_model(ref_model_cfg)  # MMSeg's MAE backbone, Feature2Pyramid, UperNet
    with recipe._quiet():
        ref_opt = build_optim_wrapper(reference_model, ref_cfg.optim_wrapper).optimizer
    base_lr = ref_cfg.optim_wrapper.optimizer.lr
    reference = _per_tensor(ref_opt.param_groups, reference_model, base_lr, 0.0)

    cfg = load_config("ade20k_vitb_mae")
    model_cfg = cfg.model.deepcopy()
    model_cfg.backbone.pretrained = None
    model = recipe._build_model(model_cfg)
    plain = {k: v for k, v in cfg.optim_wrapper.items() if k not in ("type", "loss_scale")}  # AMP needs a GPU
    optimizer = build_optim_wrapper(model, dict(plain, type="OptimWrapper")).optimizer
    per_tensor = _per_tensor(optimizer.param_groups, model, base_lr, 0.0)
    ours = {recipe.our_name_to_reference(n): v for n, v in per_tensor.items()}

    assert ours.keys() == reference.keys() and len(ours) == 235
    for name, (scale, wd) in reference.items():
        assert ours[name] == (pytest.approx(scale, rel=1e-12), wd), name
    # MMSeg as it runs: pos_embed, cls_token and the relative position tables are decayed
    assert ours["backbone.pos_embed"][1] == ours["backbone.cls_token"][1] == 0.05
    assert ours["backbone.layers.0.attn.relative_position_bias_table"][1] == 0.05


@pytest.mark.parametrize("config", ["coco_vitb_mae", "coco_vitl_mae", "ade20k_vitb_mae", "ade20k_vitb_beit"])
def test_diff_recipe_reports_no_unlisted_difference(config, capsys):
    from mae_transfer.cli.diff_recipe import main

    status = main([config])
    out = capsys.readouterr().out
    assert "NOT LISTED" not in out and "stale deviation" not in out, out[-3000:]
    assert status == 0 and out.rstrip().endswith("IDENTICAL apart from listed deviations")


def test_diff_recipe_reports_an_injected_difference(capsys):
    from mae_transfer.cli.diff_recipe import main

    status = main(["coco_vitb_mae", "--override", "SOLVER.BASE_LR", "0.0002",
                   "--override", "SOLVER.WEIGHT_DECAY_RULE", "mae"])
    out = capsys.readouterr().out
    assert status == 1
    assert "optimizer.lr: ours=0.0002 reference=0.0001  [NOT LISTED]" in out
    # the 'mae' rule exempts biases that Detectron2 decays
    assert "tensors.backbone.net.blocks.0.attn.qkv.bias.weight_decay: ours=0.0 reference=0.1  [NOT LISTED]" in out

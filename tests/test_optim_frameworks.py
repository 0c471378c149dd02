"""The Detectron2 optimizer builder and the MMEngine constructor agree, and train what they should.

Toy models have the frameworks' parameter layouts (``backbone.net.`` + pyramid + heads in
Detectron2, ``backbone.`` + ``neck.`` + ``decode_head.`` in MMSeg) around the same timm ViT; one test
builds the real Mask R-CNN and UperNet from the shipped demo configs. Training through the
project's Trainer and Runner with real models: tests/test_optim_e2e.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from detectron2.engine import SimpleTrainer
from mmengine.optim import build_optim_wrapper

import mae_transfer.seg.optimizer  # noqa: F401  (registers MAETransferOptimizerConstructor)
from mae_transfer.det.config import get_det_cfg
from mae_transfer.det.optimizer import build_optimizer

from _optim_models import ToyDetector, ToySegmentor, tiny_vit

DEPTH, LR, WD, DECAY, FREEZE = 6, 1e-3, 0.05, 0.65, "last_k_blocks:4"


def det_cfg(freeze: str = FREEZE, clip: bool = False, rule: str = "vitdet"):
    cfg = get_det_cfg()
    cfg.SOLVER.WEIGHT_DECAY_RULE = rule
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "ADAMW", LR, WD
    cfg.SOLVER.LAYER_DECAY, cfg.MODEL.VIT.FREEZE = DECAY, freeze
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    return cfg


def seg_optim_cfg(freeze: str = FREEZE, rule: str = "beit") -> dict:
    return dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=LR, betas=(0.9, 0.999), weight_decay=WD),
        constructor="MAETransferOptimizerConstructor",
        paramwise_cfg=dict(layer_decay_rate=DECAY, freeze=freeze, weight_decay_rule=rule),
    )


def per_param(optimizer: torch.optim.Optimizer, model: torch.nn.Module, prefix: str) -> dict[str, tuple]:
    """Backbone-relative name -> (lr, weight decay) as the optimizer will apply them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)][len(prefix):]: (g["lr"], g["weight_decay"])
            for g in optimizer.param_groups for p in g["params"] if names[id(p)].startswith(prefix)}


@pytest.mark.parametrize("rule", ["vitdet", "beit", "mae"])
@pytest.mark.parametrize("freeze", ["full", FREEZE])
def test_detectron2_and_mmseg_give_each_backbone_parameter_the_same_lr_and_wd(freeze, rule):
    """With the same weight-decay rule selected in each framework's config key."""
    torch.manual_seed(0)
    vit = tiny_vit(depth=DEPTH)
    det, seg = ToyDetector(copy.deepcopy(vit)), ToySegmentor(copy.deepcopy(vit))
    det_opt = build_optimizer(det_cfg(freeze, rule=rule), det)
    seg_opt = build_optim_wrapper(seg, seg_optim_cfg(freeze, rule=rule)).optimizer
    assert type(det_opt) is type(seg_opt) is torch.optim.AdamW
    det_params, seg_params = per_param(det_opt, det, "backbone.net."), per_param(seg_opt, seg, "backbone.")
    assert det_params == seg_params
    trainable = {n for n, p in vit.named_parameters()} if freeze == "full" else \
        {n for n, _ in vit.named_parameters()
         if n.startswith(("blocks.2.", "blocks.3.", "blocks.4.", "blocks.5.", "norm."))}
    assert set(det_params) == trainable
    assert det_params["blocks.2.attn.qkv.weight"] == (LR * DECAY ** (DEPTH + 1 - 3), WD)
    # heads: base lr in both
    assert {g["lr"] for g in det_opt.param_groups if any(p is det.roi_heads.weight for p in g["params"])} == {LR}
    assert {g["lr"] for g in seg_opt.param_groups if any(p is seg.decode_head.weight for p in g["params"])} == {LR}


def assert_trained_only_trainable(model, before: dict, optimizer: torch.optim.Optimizer, prefix: str):
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in before if n.startswith(prefix) and
                      (n[len(prefix):].startswith(("patch_embed.", "blocks.0.", "blocks.1.")) or
                       n[len(prefix):] in ("cls_token", "pos_embed"))}
    for name, param in model.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        assert changed != (name in frozen), name
    state_ids = {id(p) for p in optimizer.state}
    assert state_ids == {id(p) for p in model.parameters() if p.requires_grad}


class _DetectorWithLoss(ToyDetector):
    def forward(self, batch):
        images, labels = batch
        return {"loss_cls": F.cross_entropy(super().forward(images), labels)}


def _batches(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 3, (4,), generator=gen)


def test_detectron2_trainer_steps_with_last_k_blocks():
    torch.manual_seed(0)
    model = _DetectorWithLoss(tiny_vit(depth=DEPTH, drop_path=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(det_cfg(clip=True), model)
    assert type(optimizer).__name__.endswith("WithGradientClip")
    trainer = SimpleTrainer(model, _batches(), optimizer)
    trainer.train(0, 3)
    assert_trained_only_trainable(model, before, optimizer, "backbone.net.")


def test_mmengine_constructor_rejects_unknown_keys():
    model = ToySegmentor(tiny_vit(depth=2))
    cfg = seg_optim_cfg()
    cfg["paramwise_cfg"]["layer_decay"] = 0.65
    with pytest.raises(ValueError, match=r"unknown keys \['layer_decay'\].*layer_decay_rate"):
        build_optim_wrapper(model, cfg)


def test_detectron2_unknown_optimizer_is_a_clear_error():
    cfg = det_cfg()
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER is 'LAMB'; set it to 'ADAMW' or 'SGD'"):
        build_optimizer(cfg, ToyDetector(tiny_vit(depth=2)))


def test_real_detector_and_segmentor_from_shipped_configs_agree_on_the_backbone():
    """Mask R-CNN (configs/det/demo_vit_tiny.yaml) and UperNet (configs/seg/demo_vit_tiny.py) with the
    same ViT: every backbone parameter gets the same lr scale, weight decay and trainability."""
    from detectron2.modeling import build_model
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mae_transfer.det import load_config as load_det_config
    from mae_transfer.seg.config import load_config as load_seg_config

    vit = dict(rel_pos="decomposed", window_size=0, use_cls_token=False, layer_scale=None, drop_path=0.0)
    det_cfg_ = load_det_config("demo_vit_tiny", [
        "MODEL.DEVICE", "cpu", "MODEL.VIT.REL_POS", vit["rel_pos"], "MODEL.VIT.WINDOW_SIZE", "0",
        "MODEL.VIT.USE_CLS_TOKEN", "False", "MODEL.VIT.LAYER_SCALE", "None", "MODEL.VIT.DROP_PATH", "0.0",
        "SOLVER.OPTIMIZER", "ADAMW", "SOLVER.WEIGHT_DECAY", str(WD), "SOLVER.LAYER_DECAY", str(DECAY),
        "SOLVER.WEIGHT_DECAY_RULE", "beit", "MODEL.VIT.FREEZE", FREEZE])  # the seg config's rule
    seg_cfg_ = load_seg_config("demo_vit_tiny", {
        "model.backbone": {**vit, "final_norm": False},  # as the det backbone: no unused final norm
        "optim_wrapper.optimizer.weight_decay": WD,
        "optim_wrapper.paramwise_cfg": dict(layer_decay_rate=DECAY, freeze=FREEZE)})
    torch.manual_seed(0)
    det = build_model(det_cfg_)
    init_default_scope("mmseg")
    seg = MODELS.build(seg_cfg_.model)
    det_opt = build_optimizer(det_cfg_, det)
    seg_opt = build_optim_wrapper(seg, seg_cfg_.optim_wrapper).optimizer

    def scaled(optimizer, model, base_lr):
        return {name: (lr / base_lr, wd) for name, (lr, wd) in per_param(optimizer, model, "backbone.net.").items()}

    det_params = scaled(det_opt, det, det_cfg_.SOLVER.BASE_LR)
    seg_params = scaled(seg_opt, seg, seg_cfg_.optim_wrapper.optimizer.lr)
    assert det_params.keys() == seg_params.keys()
    for name in det_params:
        assert det_params[name] == pytest.approx(seg_params[name], rel=1e-12), name
    prefix = "backbone.net."
    det_vit = {n[len(prefix):]: p.requires_grad for n, p in det.named_parameters() if n.startswith(prefix)}
    seg_vit = {n[len(prefix):]: p.requires_grad for n, p in seg.named_parameters() if n.startswith(prefix)}
    assert det_vit == seg_vit and sum(det_vit.values()) == len(det_params) < len(det_vit)
    assert {n for n, trainable in det_vit.items() if not trainable} >= {"pos_embed", "patch_embed.proj.weight"}


def test_mmengine_constructor_refuses_to_freeze_an_already_wrapped_model():
    """DDP records which parameters need gradients when it wraps: freezing later must be an error."""
    from mae_transfer.seg.optimizer import apply_paramwise_freeze

    class Wrapper(torch.nn.Module):  # what the constructor sees of MMDistributedDataParallel
        def __init__(self, module):
            super().__init__()
            self.module = module

    seg = ToySegmentor(tiny_vit(depth=DEPTH))
    with pytest.raises(RuntimeError, match="already wrapped for distributed training"):
        build_optim_wrapper(Wrapper(seg), seg_optim_cfg())
    seg = ToySegmentor(tiny_vit(depth=DEPTH))
    apply_paramwise_freeze(seg, seg_optim_cfg()["paramwise_cfg"])  # at model build, as MAETransferRunner does
    optimizer = build_optim_wrapper(Wrapper(seg), seg_optim_cfg()).optimizer
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in seg.parameters())

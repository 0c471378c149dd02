"""Small pretraining loops (MAE and BEiT-style self-supervised, supervised classification) for the comparison."""
from .beit_trainer import BEiTStylePretrainConfig, pretrain_beit_style
from .mae_trainer import MAEPretrainConfig, pretrain_mae
from .sup_trainer import SupPretrainConfig, ViTClassifier, create_classifier, pretrain_supervised

__all__ = ["BEiTStylePretrainConfig", "pretrain_beit_style", "MAEPretrainConfig", "pretrain_mae",
           "SupPretrainConfig", "ViTClassifier", "create_classifier", "pretrain_supervised"]

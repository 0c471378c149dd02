"""Small pretraining loops (MAE self-supervised, supervised classification) for the comparison."""
from .mae_trainer import MAEPretrainConfig, pretrain_mae
from .sup_trainer import SupPretrainConfig, ViTClassifier, create_classifier, pretrain_supervised

__all__ = ["MAEPretrainConfig", "pretrain_mae", "SupPretrainConfig", "ViTClassifier",
           "create_classifier", "pretrain_supervised"]

"""Small pretraining loops (MAE self-supervised, supervised classification) for the comparison."""
from .mae_trainer import MAEPretrainConfig, pretrain_mae

__all__ = ["MAEPretrainConfig", "pretrain_mae"]

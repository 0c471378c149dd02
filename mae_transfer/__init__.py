"""mae_transfer: fine-tune pretrained Vision Transformers for detection and segmentation."""
__version__ = "0.1.0"

"""shufflenet: classify images with torchvision's ImageNet-pretrained ShuffleNet v2."""

__version__ = "0.1.0"

"""The ENAS micro-CNN space on CIFAR-10: space, supernet, search task, final model, drop-path."""

"""Tiny MNIST idx files for the tests of the two-model benchmarks and apps."""

import os

import numpy as np

from wpl_keras.data import mnist


def write_mnist(path, n_train=240, n_test=60, seed=0):
    """Writes the four MNIST idx files (``mnist.MNIST_FILES`` names) under ``path``: images with
    a class-dependent bright square, so that A learns something in a few steps."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            row, col = divmod(int(label), 5)
            x[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 250
        return x, y

    os.makedirs(path, exist_ok=True)
    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    arrays = {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}
    for key, filename in mnist.MNIST_FILES.items():
        mnist.write_idx(os.path.join(path, filename), arrays[key])

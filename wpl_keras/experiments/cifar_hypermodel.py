"""A CIFAR-10 ``build(hp)`` of the kind a Keras user writes, with eleven hyperparameters.

The tuner benchmark (:mod:`wpl_keras.experiments.tuner_quality`) searches it with KerasTuner's
own tuners and with the weight-sharing tuner. Its hyperparameters:

* ``blocks`` (Int 1–3), ``filters`` (Choice 16/24/32: block ``i`` has ``filters · 2^i``),
  ``kernel_0`` (Choice 3/5) and, conditional on ``blocks``, ``kernel_1`` (``blocks ≥ 2``) and
  ``kernel_2`` (``blocks = 3``);
* ``activation`` (relu/elu/swish), ``batch_norm`` (Boolean), ``pooling`` (flatten / global
  average after the last block), ``dropout`` (Float 0–0.5, step 0.1), ``dense_units``
  (Choice 64/128/256), ``learning_rate`` (Choice 1e-3/3e-3, Adam).

Every layer is named by its role (``block{i}_conv``, ``block{i}_bn``, ``dense_hidden``,
``classifier``), so a weight-sharing tuner shares a weight between two trials exactly when the
layer at the same place has the same shape (ENAS's rule). Inputs are uint8 or float images
``[N, 32, 32, 3]`` in 0–255; the model outputs logits over the 10 classes.
"""

from __future__ import annotations

import keras
import keras_tuner

MAX_BLOCKS = 3


def build_cifar_hypermodel(hp: keras_tuner.HyperParameters) -> keras.Model:
    """The compiled model of ``hp`` (see the module docstring); metric ``accuracy``."""
    blocks = hp.Int("blocks", 1, MAX_BLOCKS)
    filters = hp.Choice("filters", [16, 24, 32])
    activation = hp.Choice("activation", ["relu", "elu", "swish"])
    batch_norm = hp.Boolean("batch_norm")
    kernels = [hp.Choice("kernel_0", [3, 5])]
    for i in range(1, MAX_BLOCKS):
        with hp.conditional_scope("blocks", list(range(i + 1, MAX_BLOCKS + 1))):
            kernels.append(hp.Choice(f"kernel_{i}", [3, 5]))
    pooling = hp.Choice("pooling", ["flatten", "global_average"])
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1)
    units = hp.Choice("dense_units", [64, 128, 256])
    learning_rate = hp.Choice("learning_rate", [1e-3, 3e-3])

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i in range(blocks):
        x = keras.layers.Conv2D(filters * 2**i, kernels[i], padding="same",
                                use_bias=not batch_norm, name=f"block{i}_conv")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.Activation(activation, name=f"block{i}_act")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="global_average")(x)
    x = keras.layers.Dense(units, activation=activation, name="dense_hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(10, name="classifier")(x)
    model = keras.Model(inputs, outputs, name="cifar_hypermodel")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model

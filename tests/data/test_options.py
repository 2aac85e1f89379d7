"""The library's input pipelines run without tf.data's autotuning model thread."""

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data import cifar10_pipeline, mnist
from wpl_keras.data.options import without_autotune_thread
from wpl_keras.experiments.two_models import _dataset as two_models_dataset
from wpl_keras.tuner.hypermodel_trials import _batched, fixed_batches


def test_without_autotune_thread_turns_autotune_off_and_keeps_the_elements():
    dataset = tf.data.Dataset.range(10).map(lambda v: v * 2,
                                            num_parallel_calls=tf.data.AUTOTUNE)
    assert dataset.options().autotune.enabled is not False  # TensorFlow's default: on
    plain = without_autotune_thread(dataset.prefetch(tf.data.AUTOTUNE))
    assert plain.options().autotune.enabled is False
    assert list(plain.as_numpy_iterator()) == list(range(0, 20, 2))
    # an option set on the input holds for every dataset built on it
    assert without_autotune_thread(dataset).batch(3).options().autotune.enabled is False


def _images(n=20, size=8):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int32))


@pytest.mark.parametrize("build", [
    lambda x, y: cifar10_pipeline.make_dataset(x, y, 4, training=False),
    lambda x, y: cifar10_pipeline.make_dataset(x, y, 4, training=False, repeat=True),
    lambda x, y: cifar10_pipeline.make_dataset(x, y, 4, training=True, seed=0),
    lambda x, y: cifar10_pipeline.make_dataset(x, y, 4, training=True, repeat=True, seed=0,
                                               drop_remainder=True, start_batch=3),
    lambda x, y: cifar10_pipeline.epoch_batches(x, y, 4, epoch=1, start_step=2, seed=0),
    lambda x, y: mnist.make_dataset(x, y, batch_size=4),
    lambda x, y: mnist.make_dataset(x, y, batch_size=4, shuffle=True, repeat=True, seed=1),
    lambda x, y: two_models_dataset(x, y, 4, 0),
    lambda x, y: fixed_batches((x, y), batch_size=4, steps=2),
], ids=["cifar_eval", "cifar_eval_repeat", "cifar_train", "cifar_train_from_batch",
        "cifar_epoch", "mnist", "mnist_shuffled", "two_models", "tuner_fixed"])
def test_every_library_pipeline_has_autotune_off(build):
    x, y = _images()
    dataset = build(x, y)
    assert dataset.options().autotune.enabled is False
    batch = next(iter(dataset))
    assert int(batch[0].shape[0]) == 4


def test_the_tuner_training_stream_from_arrays_has_autotune_off_and_a_users_dataset_is_kept():
    x, y = _images()
    assert _batched((x, y), 4, training=True, seed=0).options().autotune.enabled is False
    users = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    # a user's dataset keeps the options the user gave it
    assert _batched(users, 4, training=True, seed=0).options().autotune.enabled is not False

"""ResumableTraining: when it saves, what a restore brings back, signals and refusals."""

import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.resumable import ResumableTraining, TrainingInterrupted


def _model_and_optimizer():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _step(model, optimizer):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(tf.ones([4, 2])) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
    return float(loss)


def test_saves_every_n_batches_and_at_epoch_ends_and_restores_all_of_it(tmp_path):
    folder = str(tmp_path / "ckpt")
    model, optimizer = _model_and_optimizer()
    extra = tf.Variable([0.0, 0.0], trainable=False)
    run = ResumableTraining(folder, every=2)
    assert run.start(model=model, optimizer=optimizer, extra=extra) is False
    with run:
        for _ in range(3):
            run.batch_done(_step(model, optimizer))
        extra.assign([1.0, 2.0])
        mean = run.epoch_done()  # a save
        run.batch_done(_step(model, optimizer))  # batch 4 of the run: saved (every 2)
        run.batch_done(_step(model, optimizer))  # batch 5: not saved
    assert mean == pytest.approx(run.last_epoch_loss)
    saved = [w.copy() for w in model.get_weights()]
    model2, optimizer2 = _model_and_optimizer()
    extra2 = tf.Variable([0.0, 0.0], trainable=False)
    again = ResumableTraining(folder, every=2, resume=True)
    assert again.start(model=model2, optimizer=optimizer2, extra=extra2) is True
    assert (again.epoch, again.step) == (1, 1)  # the save after batch 4, the 1st of epoch 1
    assert again.last_epoch_loss == pytest.approx(mean)
    np.testing.assert_array_equal(extra2.numpy(), [1.0, 2.0])
    assert int(optimizer2.iterations.numpy()) == 4 and int(optimizer.iterations.numpy()) == 5
    assert not np.allclose(model2.get_weights()[0], saved[0])  # batch 5 was not saved


def test_a_signal_saves_then_stops_and_the_folder_is_not_reused_without_resume(tmp_path):
    folder = str(tmp_path / "ckpt")
    model, optimizer = _model_and_optimizer()
    run = ResumableTraining(folder, every=0)
    run.start(model=model, optimizer=optimizer)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        with run:
            run.batch_done(_step(model, optimizer))
            os.kill(os.getpid(), signal.SIGTERM)  # deferred to the end of the next batch
            run.batch_done(_step(model, optimizer))
            run.batch_done(_step(model, optimizer))
    assert info.value.signum == signal.SIGTERM and info.value.checkpoint
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was put back
    model2, optimizer2 = _model_and_optimizer()
    with pytest.raises(FileExistsError, match="resume"):
        ResumableTraining(folder).start(model=model2, optimizer=optimizer2)
    again = ResumableTraining(folder, resume=True)
    again.start(model=model2, optimizer=optimizer2)
    assert again.step == 2
    np.testing.assert_array_equal(model2.get_weights()[0], model.get_weights()[0])


def test_without_a_folder_it_only_counts_and_bad_every_is_refused():
    run = ResumableTraining()
    assert run.start() is False and run.save() is None
    run.batch_done(2.0)
    run.batch_done(4.0)
    assert run.epoch_done() == 3.0 and (run.epoch, run.step) == (1, 0)
    with pytest.raises(ValueError, match="ResumableTraining every must be an integer >= 0"):
        ResumableTraining(every=-1)
    with pytest.raises(TypeError, match="ResumableTraining every must be an integer >= 0"):
        ResumableTraining(every=2.5)

"""Tests for the final micro-CNN model: build, train, export and reload (tiny 8x8 images)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data.cifar10 import CIFAR10Arrays
from wpl_keras.data.cifar10_pipeline import normalize
from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.spaces.cnn.model import (
    CosineRestarts,
    FinalConfig,
    build_final_model,
    classifier_of,
    export_classifier,
    learning_rate_schedule,
    train_final,
)
from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
from wpl_keras.nas.spaces.cnn.drop_path import DropPath, DropPathSchedule, drop_path_progress

ARCH = (0, 1, 1, 2, 2, 3, 0, 4) + (1, 0, 0, 2, 2, 1, 1, 3)


def _tiny_config(**kwargs):
    base = dict(num_cells=1, filters=4, num_stages=2, aux_weight=0.4, drop_path_keep=0.8,
                cutout=3, batch_size=8, lr_max=0.05, lr_min=0.001)
    base.update(kwargs)
    return FinalConfig(**base)


def _arrays(n_train=32, n_test=16):
    rng = np.random.default_rng(0)
    return CIFAR10Arrays(
        rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.int32),
        rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.int32),
        "synthetic",
    )


def test_build_has_cells_aux_head_and_is_deterministic_at_inference(seed):
    space = MicroCellSpace(num_nodes=2)
    model = build_final_model(space, ARCH, _tiny_config(), input_shape=(8, 8, 3))
    assert len(model.outputs) == 2
    names = [layer.name for layer in model.layers]
    assert any(n.startswith("cell1_reduce") for n in names)
    assert "cell0_normal_n2x_sep0" in names  # sep3x3 on node 2, input x
    assert "cell0_normal_n3x" in names  # avg3x3 pool
    x = tf.random.normal([3, 8, 8, 3])
    logits, aux = model(x, training=False)
    assert logits.shape == (3, 10) and aux.shape == (3, 10)
    np.testing.assert_allclose(model(x, training=False)[0], logits, atol=1e-6)
    single = build_final_model(space, ARCH, _tiny_config(aux_weight=0.0, num_stages=1),
                               input_shape=(8, 8, 3))
    assert len(single.outputs) == 1 and classifier_of(single) is single


@pytest.mark.parametrize("field, value, error", [
    ("num_cells", 0, ValueError), ("filters", 8.0, TypeError), ("batch_size", "144", TypeError),
    ("lr_max", 0.0, ValueError), ("lr_min", np.float32(-1e-4), ValueError),
    ("momentum", 1.0, ValueError), ("weight_decay", float("nan"), ValueError),
    ("aux_weight", -0.4, ValueError), ("cutout", -1, ValueError), ("dropout_keep", 0.0, ValueError),
    ("grad_clip", 0.0, ValueError), ("grad_clip", "5", TypeError), ("lr_t_mul", True, TypeError),
])
def test_final_config_refuses_bad_numbers_naming_the_field(field, value, error):
    with pytest.raises(error, match=f"FinalConfig.{field} must be"):
        FinalConfig(**{field: value})
    config = FinalConfig(lr_max=np.float32(0.5), batch_size=np.int64(16), grad_clip=None)
    assert (config.lr_max, config.batch_size) == (0.5, 16)
    assert json.loads(json.dumps(config.to_json()))["batch_size"] == 16


def test_bad_inputs():
    space = MicroCellSpace(num_nodes=2)
    with pytest.raises(InvalidArchitectureError):
        build_final_model(space, ARCH[:-1], _tiny_config(), input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="even"):
        FinalConfig(filters=7)
    with pytest.raises(ValueError, match="drop_path_keep"):
        FinalConfig(drop_path_keep=1.5)
    with pytest.raises(ValueError, match="dropout_keep"):
        FinalConfig(dropout_keep=0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        FinalConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_t0"):
        FinalConfig(lr_t0=0)
    with pytest.raises(ValueError, match="train_final: epochs must be an integer >= 1"):
        train_final(space, ARCH, _tiny_config(), _arrays(), epochs=0)
    with pytest.raises(TypeError, match="train_final: epochs must be an integer >= 1"):
        train_final(space, ARCH, _tiny_config(), _arrays(), epochs=2.0)


@pytest.mark.slow
def test_train_export_reload_round_trip(seed, tmp_path):
    space = MicroCellSpace(num_nodes=2)
    model, report = train_final(space, ARCH, _tiny_config(num_stages=1), _arrays(), epochs=1,
                                seed=seed)
    assert 0.0 <= report["test_error_percent"] <= 100.0
    assert np.isfinite(report["train_loss"]) and report["replicas"] == 1
    # the callback ran: before the last step t = T - 1 the progress is (t + 1) / T = 1
    assert float(drop_path_progress(model).numpy()) == 1.0
    paths = export_classifier(model, ARCH, space, str(tmp_path / "export"))
    cells = json.load(open(paths["cells_json"]))
    assert space.from_json(cells) == ARCH and cells["normal"][0] == [0, 1, 1, 2]
    assert open(paths["cells_png"], "rb").read()[:4] == b"\x89PNG"
    raw = np.random.default_rng(1).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    expected = tf.nn.softmax(classifier_of(model)(normalize(raw), training=False)).numpy()
    loaded = tf.saved_model.load(paths["saved_model"])
    got = loaded.signatures["serving_default"](images=tf.constant(raw))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_train_final_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path):
    """2 epochs of 4 batches, killed after batch 3 of epoch 1 (checkpoints every 3 batches:
    the last one after batch 2 of epoch 1, so batch 3 is trained again), then resumed: the
    test error, the last epoch's loss and the weights equal the uninterrupted run's. Dropout,
    drop-path, the auxiliary head, cutout and the cosine schedule are on, so the generators'
    states, the data position, the SGD momentum and step must all be restored."""
    from wpl_keras.nas.resumable import ResumableTraining

    space, config, arrays = MicroCellSpace(num_nodes=2), _tiny_config(num_stages=1), _arrays()
    model, full = train_final(space, ARCH, config, arrays, epochs=2, seed=5)
    folder = str(tmp_path / "ckpt")
    done: list = []

    class Kill(RuntimeError):
        pass

    def killed_after(run, batches, counter):
        count = run.batch_done

        def batch_done(loss):
            if len(counter) == batches:
                raise Kill("simulated kill -9")
            counter.append(loss)
            count(loss)

        run.batch_done = batch_done
        return run

    with pytest.raises(Kill):
        train_final(space, ARCH, config, arrays, epochs=2, seed=5,
                    checkpoint=killed_after(ResumableTraining(folder, every=3), 7, done))
    again: list = []
    resumed_model, resumed = train_final(
        space, ARCH, config, arrays, epochs=2, seed=5,
        checkpoint=killed_after(ResumableTraining(folder, every=3, resume=True), 99, again))
    assert len(again) == 2  # batches 3 and 4 of epoch 1
    assert resumed["test_error_percent"] == full["test_error_percent"]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    assert float(drop_path_progress(resumed_model).numpy()) == 1.0
    for a, b in zip(resumed_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- ENAS structure
# normal: node 2 = sep3x3(0) + identity(0), node 3 = max3x3(0) + sep5x5(0): inputs 1 and
# nodes 2, 3 are unused (concatenated: 3 · F channels, an unused cell input among them);
# reduce: node 2 = identity(1) + sep3x3(1), node 3 = avg3x3(2) + max3x3(1): input 0 (at twice
# the size, factorised-reduced) and node 3 are unused.
COUNT_ARCH = (0, 1, 0, 0, 0, 4, 0, 2) + (1, 0, 1, 1, 2, 3, 1, 4)


def _conv(k, c_in, c_out):
    return k * k * c_in * c_out


def _bn(c):  # scale and offset (the moving mean and variance are as many, not trained)
    return 2 * c


def _sep(k, f):  # (ReLU -> depthwise k x k + pointwise f -> f -> BN) twice
    return 2 * (k * k * f + _conv(1, f, f) + _bn(f))


def _reduce(c_in, f):  # factorised reduction: two 1x1 convs to f / 2, concat, BN
    return 2 * _conv(1, c_in, f // 2) + _bn(f)


def _hand_count():
    """Trainable parameters of COUNT_ARCH, filters 4, 2 stages of 1 cell, 8x8x3 images, no
    auxiliary head: stem, cell 0 normal (F 4, 8x8), cell 1 reduce (F 8, 4x4), cell 2 normal
    (F 8, 4x4), dense head without bias. Counted layer by layer from ENAS's fixed child."""
    stem = _conv(3, 3, 12) + _bn(12)
    # cell 0: both inputs are the stem (12 ch): 1x1 conv each; the newer one gets the extra
    # 1x1 conv (layer_base); sep3x3 and sep5x5 at F 4; output 3 x 4 = 12 ch
    cell0 = 2 * (_conv(1, 12, 4) + _bn(4)) + (_conv(1, 4, 4) + _bn(4)) + _sep(3, 4) + _sep(5, 4)
    # cell 1: inputs stem (12 ch) and cell 0 (12 ch), same size: 1x1 conv each + layer_base;
    # identity with stride 2 = factorised reduction; sep3x3 with stride 2; pools free; the
    # unused input 0 is factorised-reduced for the concatenation; output 2 x 8 = 16 ch
    cell1 = (2 * (_conv(1, 12, 8) + _bn(8)) + (_conv(1, 8, 8) + _bn(8)) + _reduce(8, 8)
             + _sep(3, 8) + _reduce(8, 8))
    # cell 2: input cell 0 (12 ch, 8x8) factorised-reduced; cell 1 (16 ch): 1x1 conv +
    # layer_base; sep3x3 and sep5x5 at F 8; output 3 x 8 = 24 ch
    cell2 = (_reduce(12, 8) + (_conv(1, 16, 8) + _bn(8)) + (_conv(1, 8, 8) + _bn(8))
             + _sep(3, 8) + _sep(5, 8))
    return stem + cell0 + cell1 + cell2 + 24 * 10


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_parameter_count_matches_an_independent_count():
    space = MicroCellSpace(num_nodes=2)
    config = _tiny_config(num_stages=2, aux_weight=0.0)
    model = build_final_model(space, COUNT_ARCH, config, input_shape=(8, 8, 3))
    assert _hand_count() == 3060
    assert _count(model.trainable_weights) == 3060
    # moving statistics mirror the BN scale/offset counts (304), plus the drop-path progress
    assert _count(model.non_trainable_weights) == 304 + 1
    assert model.get_layer("cell2_normal_out").output.shape == (None, 4, 4, 24)
    assert model.get_layer("cell1_reduce_out").output.shape == (None, 4, 4, 16)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.2)  # dropout_keep 0.8
    # L2: one term per kernel (36: stem 1, cells 11 + 11 + 12, dense 1), and with l2_on_bn
    # two per BatchNorm (22 BN layers: stem 1, 7 per cell)
    assert len(model.losses) == 36 + 2 * 22
    kernels_only = build_final_model(space, COUNT_ARCH, _tiny_config(
        num_stages=2, aux_weight=0.0, l2_on_bn=False), input_shape=(8, 8, 3))
    assert len(kernels_only.losses) == 36
    # auxiliary head on cell 2's 4x4x24 output: pool window 4 -> 1x1, conv 128, conv 768
    # with a 1x1 kernel, BN after each, dense 768 -> 10 without bias
    aux = _conv(1, 24, 128) + _bn(128) + _conv(1, 128, 768) + _bn(768) + 768 * 10
    trained = build_final_model(space, COUNT_ARCH, _tiny_config(num_stages=2, aux_trainable=True),
                                input_shape=(8, 8, 3))
    assert _count(trained.trainable_weights) == 3060 + aux
    frozen = build_final_model(space, COUNT_ARCH, _tiny_config(num_stages=2),
                               input_shape=(8, 8, 3))
    assert _count(frozen.trainable_weights) == 3060  # ENAS: the head's weights do not train
    assert not frozen.get_layer("aux_bn768").center and not frozen.get_layer("aux_bn768").scale


def test_aux_head_has_a_768_channel_conv_over_the_pooled_map(seed):
    space = MicroCellSpace(num_nodes=2)
    config = _tiny_config(num_cells=1, num_stages=3)
    model = build_final_model(space, COUNT_ARCH, config, input_shape=(32, 32, 3))
    # 32 -> 16 -> 8 at the last stage; the head reads cell 4 (after the second reduction):
    # 5x5 pool, stride 3, valid: 8 -> 2, so the 768 conv has a 2x2 kernel
    assert model.get_layer("aux_relu").input.shape == (None, 8, 8, 48)
    assert model.get_layer("aux_pool").output.shape == (None, 2, 2, 48)
    assert model.get_layer("aux_conv128").kernel.shape == (1, 1, 48, 128)
    assert model.get_layer("aux_conv768").kernel.shape == (2, 2, 128, 768)
    logits, aux = model(tf.random.normal([2, 32, 32, 3]), training=True)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    assert model.get_layer("aux_relu").input is model.get_layer("cell4_normal_out").output


def test_drop_path_keep_ramps_over_layers_and_steps():
    space = MicroCellSpace(num_nodes=2)
    config = _tiny_config(num_stages=2, drop_path_keep=0.6)  # L = 3 cells
    model = build_final_model(space, COUNT_ARCH, config, input_shape=(8, 8, 3))
    progress = drop_path_progress(model)
    assert float(progress.numpy()) == 0.0
    schedule = DropPathSchedule(progress, total_steps=10)
    cases = [  # (step t, cell l, 1 - (l + 1) / 3 * min(1, (t + 1) / 10) * 0.4)
        (4, 0, 1 - 1 / 3 * 0.5 * 0.4), (4, 1, 1 - 2 / 3 * 0.5 * 0.4), (4, 2, 0.8),
        (0, 2, 0.96), (9, 2, 0.6), (25, 0, 1 - 1 / 3 * 0.4), (25, 2, 0.6),
    ]
    for step, cell, expected in cases:
        schedule._step = step
        schedule.on_train_batch_begin(0)
        layers = [layer for layer in model.layers
                  if isinstance(layer, DropPath) and layer.name.startswith(f"cell{cell}_")]
        assert layers
        for layer in layers:
            assert float(layer.current_keep()) == pytest.approx(expected, abs=1e-6)


def test_identity_ops_skip_drop_path_and_others_drop_at_the_keep_rate(seed):
    # node 2 = identity(0) + identity(1); node 3 = sep3x3(2) + identity(2)
    arch = (0, 0, 1, 0, 2, 1, 2, 0) + (0, 1, 1, 3, 2, 4, 0, 2)
    space = MicroCellSpace(num_nodes=2)
    config = _tiny_config(num_stages=1, aux_weight=0.0, drop_path_keep=0.3, dropout_keep=1.0)
    model = build_final_model(space, arch, config, input_shape=(8, 8, 3))
    names = {layer.name for layer in model.layers}
    assert "cell0_normal_n3x_droppath" in names
    assert not {"cell0_normal_n2x_droppath", "cell0_normal_n2y_droppath",
                "cell0_normal_n3y_droppath"} & names
    drop_path_progress(model).assign(1.0)  # one cell: keep = 1 - 1 * 1 * 0.7 = 0.3
    parts = ["cell0_normal_in0_bn", "cell0_normal_base_bn", "cell0_normal_n2",
             "cell0_normal_n3x_bn1", "cell0_normal_n3"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in parts])
    s0, s1, n2, sep, n3 = (t.numpy() for t in probe(tf.random.normal([4000, 8, 8, 3]),
                                                      training=True))
    np.testing.assert_array_equal(n2, s0 + s1)  # identity paths: never dropped
    diff = (n3 - n2).reshape(len(n3), -1)
    kept = np.abs(diff).max(axis=1) > 0
    assert abs(kept.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(kept))
    np.testing.assert_allclose(diff[kept], sep.reshape(len(sep), -1)[kept] / 0.3,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model(tf.ones([2, 8, 8, 3]), training=False),
                                  model(tf.ones([2, 8, 8, 3]), training=False))


def test_cosine_with_restarts_at_chosen_steps():
    # lr_min + (lr_max - lr_min) / 2 * (1 + cos(pi * (e - S_i) / T_i)), 3 steps per epoch,
    # cycles of 10, 20, 40, ... epochs starting at epochs 0, 10, 30, 70, 150, 310
    schedule = CosineRestarts(lr_max=0.05, lr_min=1e-4, t0=10, t_mul=2, steps_per_epoch=3)
    expected = {
        0: 0.05, 2: 0.05,  # epoch 0: cycle start
        15: 0.02505,  # epoch 5: half-way through 10 epochs -> (0.05 + 0.0001) / 2
        29: 0.0001 + 0.02495 * (1 - 0.9510565163),  # epoch 9: cos(0.9 pi)
        30: 0.05,  # epoch 10: restart
        60: 0.02505,  # epoch 20: half-way through 20
        89: 0.0001 + 0.02495 * (1 - 0.9876883406),  # epoch 29: cos(19 pi / 20)
        90: 0.05,  # epoch 30: restart
        1887: 0.0001 + 0.02495 * (1 - 0.9999518070),  # epoch 629: cos(319 pi / 320)
    }
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5), step
    assert learning_rate_schedule(FinalConfig(), 3, 630).get_config() == schedule.get_config()
    cosine = learning_rate_schedule(FinalConfig(lr_schedule="cosine"), steps_per_epoch=3,
                                    epochs=2)
    assert float(cosine(0)) == pytest.approx(0.05)
    assert float(cosine(3)) == pytest.approx(0.02505, rel=1e-5)
    assert float(cosine(6)) == pytest.approx(1e-4, rel=1e-4)


def test_enas_final_defaults():
    config = FinalConfig()
    assert (config.num_cells, config.filters, config.num_stages, config.batch_size) == (
        5, 36, 3, 144)
    assert (config.aux_weight, config.drop_path_keep, config.dropout_keep) == (0.4, 0.6, 0.8)
    assert (config.lr_schedule, config.lr_max, config.lr_min, config.lr_t0,
            config.lr_t_mul) == ("cosine_restarts", 0.05, 1e-4, 10, 2)
    assert (config.weight_decay, config.cutout, config.grad_clip) == (2e-4, 16, None)
    assert sum(10 * 2**i for i in range(6)) == 630  # six whole cycles in ENAS's 630 epochs

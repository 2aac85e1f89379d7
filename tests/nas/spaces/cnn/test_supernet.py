"""Tests for the one-trace micro-CNN supernet and its WPL search task (tiny 8x8 images)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data.cifar10 import SearchSplits
from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.spaces.cnn.space import OPS, MicroCellSpace
from wpl_keras.nas.spaces.cnn.task import CNNOptimizerConfig, CNNSearchTask, CNNTaskConfig
from wpl_keras.nas.spaces.cnn.supernet import (CNNSupernet, SupernetConfig, batch_norm,
                                                factorized_reduce)
from wpl_keras.utils.checkpoint import check_checkpoint_covers
from wpl_keras.wpl.config import WPLConfig

SEP5 = OPS.index("sep5x5")


def _splits(n=48, size=8):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    return SearchSplits(x[:32], y[:32], x[32:], y[32:])


def _config(**kwargs):
    base = dict(
        supernet=SupernetConfig(num_cells=1, filters=4, num_stages=1),
        batch_size=8, eval_batch_size=8, fixed_valid_size=16, augment=False,
        optimizer=CNNOptimizerConfig(lr_max=0.05), lr_epochs=4,
    )
    base.update(kwargs)
    return CNNTaskConfig(**base)


@pytest.fixture(scope="module")
def task():
    task = CNNSearchTask(MicroCellSpace(num_nodes=2), _config(), _splits(), seed=0)
    assert float(task.wpl_state.strength.numpy()) == 0.0  # α is the schedule's
    task.wpl_state.strength.assign(60.0)  # as the search driver would write it
    return task


def _arch_without(space, op, rng):
    while True:
        arch = space.sample(rng)
        if op not in arch[1::2]:
            return arch


@pytest.mark.slow
def test_one_trace_serves_every_architecture(task):
    rng = np.random.default_rng(1)
    for k in range(6):
        out = task.train_architecture(task.space.sample(rng), 2, wpl_active=k % 2 == 1)
        assert np.isfinite(out["loss"]) and out["penalty"] >= 0
    for _ in range(3):
        arch = task.space.sample(rng)
        assert 0.0 <= task.validation_error(arch) <= 100.0
        assert 0.0 <= task.reward(arch) <= 1.0
    assert task.train_traces == 1
    assert task.eval_traces == 1


@pytest.mark.slow
def test_unchosen_poisoned_op_does_not_run(seed):
    """NaN weights of sep5x5 leave an architecture without sep5x5 exactly as it was, and
    change one that runs it (the poison reaches the output: as NaN, or as zeros where a fused
    BN → ReLU kernel maps NaN to 0)."""
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=2))
    call = tf.function(lambda x, a: net((x, a), training=True))
    images = tf.random.normal([2, 8, 8, 3])
    rng = np.random.default_rng(0)
    clean = _arch_without(space, SEP5, rng)
    poisoned = list(clean)
    poisoned[1] = SEP5  # normal node 2, input x runs sep5x5
    poisoned[3] = 0
    archs = [tf.constant(a, tf.int32) for a in (clean, poisoned)]
    before = [call(images, a).numpy() for a in archs]
    for cell in net.cell_weights:
        for node in cell.op_weights:
            for v in node["sep5x5"]:
                v.assign(tf.fill(v.shape, np.nan))
    after = [call(images, a).numpy() for a in archs]
    assert np.all(np.isfinite(after[0]))
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1], equal_nan=False)


def test_masks_select_the_sliced_op_weights():
    """Op weights are per (node, slot, input, op): the mask of node i's op variable
    ``[2, i + 2, …]`` is 1 at ``[slot, input]`` iff that slot takes that input and runs the op;
    the output conv's mask marks the loose ends; every other weight is used whole."""
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=1))
    # node 2: x = sep3x3(input 0), y = sep5x5(input 1); node 3: x = identity(node 2),
    # y = sep3x3(input 0): the loose end is node 3 alone
    arch = (0, 1, 1, 2, 2, 0, 0, 1) + (0, 0, 0, 0, 0, 0, 0, 0)
    masks = net.usage_masks(tf.constant(arch, tf.int32))
    by_name = {v.path.split("/")[-1]: m.numpy() for v, m in zip(net.trainable_variables, masks)}
    for part in ("depthwise", "pointwise", "bn_scale", "bn_offset"):
        np.testing.assert_array_equal(by_name[f"node2_sep3x3_{part}"].reshape(2, 2),
                                      [[1, 0], [0, 0]])
        np.testing.assert_array_equal(by_name[f"node2_sep5x5_{part}"].reshape(2, 2),
                                      [[0, 0], [0, 1]])
        np.testing.assert_array_equal(by_name[f"node3_sep3x3_{part}"].reshape(2, 3),
                                      [[0, 0, 0], [1, 0, 0]])
        np.testing.assert_array_equal(by_name[f"node3_sep5x5_{part}"], 0)
    np.testing.assert_array_equal(by_name["out_conv1x1"].reshape(-1), [0, 0, 0, 1])
    for name in ("stem_conv", "stem_bn_scale", "input0_conv1x1", "out_bn_scale", "head_kernel"):
        assert by_name[name].shape == () and float(by_name[name]) == 1.0
    # another input of the same op is another slice
    moved = (1, 1) + arch[2:]
    m = net.usage_masks(tf.constant(moved, tf.int32))
    sep3 = [mm for v, mm in zip(net.trainable_variables, m) if "node2_sep3x3_depthwise" in v.path]
    np.testing.assert_array_equal(sep3[0].numpy().reshape(2, 2), [[0, 1], [0, 0]])


def test_unused_ops_get_no_update_fisher_or_anchor(task):
    arch = (0, 1, 1, 1, 2, 0, 0, 1) + (1, 3, 0, 4, 2, 1, 1, 0)  # no sep5x5 anywhere
    # give anchors an offset so that a snapshot is visible
    for a in task.wpl_state.anchors:
        a.assign(tf.convert_to_tensor(a) + 1.0)
    before = [v.numpy().copy() for v in task.variables]
    fisher_before = [f.numpy().copy() for f in task.wpl_state.fisher]
    updates_before = int(task.wpl_state.num_fisher_updates.numpy())
    anchors_before = [a.numpy().copy() for a in task.wpl_state.anchors]
    task.train_architecture(arch, 2, wpl_active=True)
    masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    changed_used = 0
    for v, b, f, fb, a, ab, m in zip(task.variables, before, task.wpl_state.fisher, fisher_before,
                                     task.wpl_state.anchors, anchors_before, masks):
        m = np.broadcast_to(m.numpy(), b.shape).astype(bool)
        np.testing.assert_array_equal(v.numpy()[~m], b[~m])  # no step on unused slices
        np.testing.assert_array_equal(f.numpy()[~m], fb[~m])  # no Fisher update
        np.testing.assert_array_equal(a.numpy()[~m], ab[~m])  # no anchor snapshot
        np.testing.assert_array_equal(a.numpy()[m], v.numpy()[m])  # θ* ← θ on used slices
        changed_used += int(np.any(v.numpy()[m] != b[m]))
        if m.any():
            assert np.any(f.numpy()[m] != fb[m])
    assert changed_used > 0
    assert int(task.wpl_state.num_fisher_updates.numpy()) == updates_before + 1


@pytest.mark.slow
def test_slice_axes_and_per_slice_fisher_clip():
    space = MicroCellSpace(num_nodes=2)
    clip = 1e-12  # below every used slice's ‖g²‖ (BN offsets included): each one is clipped
    task = CNNSearchTask(space, _config(wpl=WPLConfig(clip_norm=clip, fisher_momentum=1.0)),
                         _splits(), seed=0)
    axes = task.supernet.slice_axes()
    for v, a in zip(task.variables, axes):
        stacked = "/node" in v.path  # a node's per-(slot, input) op variable
        want = list(range(2, len(v.shape))) if stacked else None
        assert a == ([1, 2] if "out_conv1x1" in v.path else want), v.path
    arch = (0, 1, 0, 1, 2, 1, 2, 1) + (1, 2, 0, 1, 2, 1, 1, 2)  # sep3x3 on all four slots
    task.train_architecture(arch, 1, wpl_active=True)
    masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    whole = []
    for f, a, m in zip(task.wpl_state.fisher, axes, masks):
        f = f.numpy()
        if a is None:  # a whole weight: clipped as a whole (0 where no gradient reached it)
            whole.append(float(np.linalg.norm(f)))
            continue
        norms = np.sqrt(np.sum(np.square(f), axis=tuple(a)))  # [2, i + 2] or [B + 2]
        used = m.numpy().reshape(norms.shape).astype(bool)
        np.testing.assert_allclose(norms[used], clip, rtol=1e-4)  # each slice on its own
        np.testing.assert_array_equal(norms[~used], 0.0)
        # not clipped as one tensor: the slices' norms add up in squares
        np.testing.assert_allclose(np.linalg.norm(f), np.sqrt(used.sum()) * clip, rtol=1e-4)
    np.testing.assert_allclose([w for w in whole if w > 0], clip, rtol=1e-4)
    assert sum(w > 0 for w in whole) >= 5  # stem conv and BN, calibration, head at least



@pytest.mark.slow
def test_tensor_norm_fisher_has_norm_clip_on_every_used_slice():
    """WPLConfig.fisher_normalization reaches the task's state: each used op slice (and each
    whole weight that got a gradient) has ‖F‖ = clip_norm, unused slices stay 0."""
    space = MicroCellSpace(num_nodes=2)
    wpl = WPLConfig(clip_norm=10.0, fisher_normalization="tensor_norm")
    task = CNNSearchTask(space, _config(wpl=wpl), _splits(), seed=0)
    assert task.wpl_state.fisher_normalization == "tensor_norm"
    arch = (0, 1, 0, 1, 2, 1, 2, 1) + (1, 2, 0, 1, 2, 1, 1, 2)
    task.train_architecture(arch, 1, wpl_active=True)
    masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    for f, a, m in zip(task.wpl_state.fisher, task.supernet.slice_axes(), masks):
        f = f.numpy().astype(np.float64)
        if a is None:
            assert np.linalg.norm(f) == pytest.approx(10.0, rel=1e-4) or not f.any()
            continue
        norms = np.sqrt(np.sum(np.square(f), axis=tuple(a)))
        used = m.numpy().reshape(norms.shape).astype(bool)
        np.testing.assert_allclose(norms[used], 10.0, rtol=1e-4)
        np.testing.assert_array_equal(norms[~used], 0.0)

def test_penalty_counts_only_used_slices():
    space = MicroCellSpace(num_nodes=2)
    task = CNNSearchTask(space, _config(), _splits(), seed=0)
    arch = (0, 1, 1, 1, 2, 0, 0, 1) + (1, 3, 0, 4, 2, 2, 1, 0)
    state = task.wpl_state
    state.strength.assign(2.0)
    rng = np.random.default_rng(0)
    expected = 0.0
    masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    for v, f, a, m in zip(task.variables, state.fisher, state.anchors, masks):
        fv = rng.uniform(0, 1, f.shape).astype(np.float32)
        f.assign(fv)
        a.assign(v.numpy() - 0.5)
        expected += float(np.sum(np.broadcast_to(m.numpy(), fv.shape) * fv * 0.25))
    got = float(task._penalty(masks))
    np.testing.assert_allclose(got, 0.5 * 2.0 * expected, rtol=1e-4)
    assert expected < 0.99 * sum(float(np.sum(f.numpy() * 0.25)) for f in state.fisher)


@pytest.mark.slow
def test_proximal_pull_moves_only_used_slices_toward_anchors():
    space = MicroCellSpace(num_nodes=2)
    task = CNNSearchTask(space, _config(), _splits(), seed=0)
    arch = (0, 1, 1, 1, 2, 0, 0, 1) + (1, 3, 0, 4, 2, 2, 1, 0)
    state = task.wpl_state
    state.strength.assign(2.0)
    lr = float(task.optimizer.learning_rate.numpy())
    rng = np.random.default_rng(1)
    masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    expected, before = [], []
    for v, f, a, m in zip(task.variables, state.fisher, state.anchors, masks):
        fv = rng.uniform(0, 1, f.shape).astype(np.float32)
        f.assign(fv)
        a.assign(v.numpy() - 0.5)
        k = lr * 2.0 * np.broadcast_to(m.numpy(), fv.shape) * fv
        expected.append((v.numpy() + k * (v.numpy() - 0.5)) / (1 + k))
        before.append(v.numpy())
    task._proximal_pull(masks)
    for v, want, b, m in zip(task.variables, expected, before, masks):
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6)
        unused = ~np.broadcast_to(m.numpy(), b.shape).astype(bool)
        np.testing.assert_array_equal(v.numpy()[unused], b[unused])
    # A training step at a huge alpha stays finite (a gradient step would diverge).
    state.strength.assign(1e12)
    out = task.train_architecture(arch, 2, wpl_active=True)
    assert np.isfinite(out["loss"]) and all(np.all(np.isfinite(v.numpy())) for v in task.variables)
    with pytest.raises(ValueError, match="mode"):
        _config(wpl=WPLConfig(mode="implicit"))
    with pytest.raises(TypeError, match="WPLConfig"):
        _config(wpl="proximal")


@pytest.mark.slow
def test_gradient_mode_puts_the_penalty_in_the_loss():
    space = MicroCellSpace(num_nodes=2)
    arch = (0, 1, 1, 1, 2, 0, 0, 1) + (1, 3, 0, 4, 2, 2, 1, 0)
    after = {}
    for mode in ("gradient", "proximal"):
        sgd = CNNOptimizerConfig(momentum=0.0, grad_clip=None, weight_decay=0.0)
        task = CNNSearchTask(space, _config(wpl=WPLConfig(mode=mode), optimizer=sgd), _splits(),
                             seed=0)
        task.wpl_state.strength.assign(60.0)  # the search driver writes α; here by hand
        for f, a in zip(task.wpl_state.fisher, task.wpl_state.anchors):
            f.assign(tf.ones_like(f))
            a.assign(tf.convert_to_tensor(a) - 0.1)
        start = [v.numpy() for v in task.variables]
        out = task.train_architecture(arch, 1, wpl_active=True)
        assert out["penalty"] > 0.0
        after[mode] = [v.numpy() for v in task.variables]
        k = float(task.optimizer.learning_rate.numpy()) * float(task.wpl_state.strength.numpy())
        masks = task.supernet.usage_masks(tf.constant(arch, tf.int32))
    # Plain SGD, F = 1 on used slices, θ − θ* = 0.1: the data step θ̃ = θ − η g is the same in
    # both modes; gradient mode gives θ̃ − η α (θ − θ*), proximal (θ̃ + η α θ*) / (1 + η α).
    for g, p, x, m in zip(after["gradient"], after["proximal"], start, masks):
        m = np.broadcast_to(m.numpy(), x.shape)
        data_step = g + k * m * 0.1
        np.testing.assert_allclose(p, (data_step + k * m * (x - 0.1)) / (1 + k * m),
                                   rtol=1e-4, atol=1e-5)


def test_validation_error_is_on_a_fixed_batch(task):
    arch = task.space.sample(np.random.default_rng(5))
    first = task.validation_error(arch)
    assert task.validation_error(arch) == first
    assert task.fixed_images.shape[0] == 16


@pytest.mark.parametrize("rows", [16, 5, 1])
def test_eval_is_the_correct_count_and_mean_cross_entropy(task, rows):
    """``_eval`` = (correct / n, Σ CE / n) of the supernet on the batch, for any ``n`` on one
    trace; validation_error is ``100 (1 − accuracy)`` on the fixed batch."""
    traces = task.eval_traces
    arch = task._arch(task.space.sample(np.random.default_rng(rows)))
    images, labels = task.fixed_images[:rows], task.fixed_labels[:rows]
    logits = task.supernet((images, arch), training=False)
    correct = np.sum(np.argmax(logits.numpy(), -1) == labels.numpy())
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()
    acc, loss = task._eval(images, labels, arch)
    assert float(acc) == pytest.approx(correct / rows, abs=1e-7)
    np.testing.assert_allclose(float(loss), ce.mean(), rtol=1e-5)
    if rows == 16:
        assert task.validation_error(tuple(arch.numpy())) == pytest.approx(100 * (1 - acc))
    assert task.eval_traces == traces


def test_start_epoch_schedule_and_no_own_flush(task):
    task.start_epoch(0)
    np.testing.assert_allclose(task.optimizer.learning_rate.numpy(), 0.05, rtol=1e-6)
    task.start_epoch(4)
    np.testing.assert_allclose(task.optimizer.learning_rate.numpy(), 0.0005, rtol=1e-5)
    saved = [f.numpy().copy() for f in task.wpl_state.fisher]
    task.wpl_state.fisher[0].assign(tf.ones_like(task.wpl_state.fisher[0]))
    for epoch in range(7):  # the Fisher flush is the search driver's, never the task's
        task.start_epoch(epoch)
        np.testing.assert_array_equal(task.wpl_state.fisher[0].numpy(), 1.0)
    task.wpl_state.fisher[0].assign(saved[0])
    task.start_epoch(0)


@pytest.mark.parametrize("name, flushes", [
    ("paper", [6, 9, 12, 15]),  # WPL from epoch 3, flush every 3 epochs after it
    ("cpu-small", [6, 9, 12, 15, 18]),
    ("tiny", []),  # 3 epochs, WPL from epoch 1, flush every 2: none within the run
])
def test_cnn_presets_flush_through_the_schedule(name, flushes):
    from wpl_keras.experiments import enas_cnn
    from wpl_keras.wpl.schedule import flush_at

    search = enas_cnn.preset(name).search
    horizon = 17 if name == "paper" else search.epochs
    assert [e for e in range(horizon) if flush_at(e, search)] == flushes
    plain = dataclasses.replace(search, wpl=False)
    assert not any(flush_at(e, plain) for e in range(horizon))


def test_bad_inputs_raise(task):
    with pytest.raises(InvalidArchitectureError):
        task.train_architecture((0,) * 3, 1, wpl_active=False)
    with pytest.raises(ValueError, match="num_batches"):
        task.train_architecture(task.space.sample(np.random.default_rng(0)), 0, wpl_active=False)
    with pytest.raises(ValueError, match="even"):
        SupernetConfig(filters=5)
    with pytest.raises(ValueError, match="drop_path_keep"):
        SupernetConfig(drop_path_keep=0.0)
    with pytest.raises(TypeError, match="MicroCellSpace"):
        CNNSupernet(object())
    with pytest.raises(ValueError, match="full training batch"):
        CNNSearchTask(MicroCellSpace(1), _config(batch_size=64), _splits())


def test_checkpoint_round_trip(task, tmp_path):
    arch = task.space.sample(np.random.default_rng(2))
    task.train_architecture(arch, 1, wpl_active=True)
    ckpt = tf.train.Checkpoint(**task.checkpoint_items())
    path = ckpt.write(str(tmp_path / "ckpt"))
    saved = [f.numpy().copy() for f in task.wpl_state.fisher]
    error = task.validation_error(arch)
    archs = [task.space.sample(np.random.default_rng(k)) for k in range(3)]
    rewards = [task.reward(a) for a in archs]  # the valid iterator is checkpointed too
    task.train_architecture(arch, 2, wpl_active=True)
    ckpt.read(path).assert_consumed()
    for f, s in zip(task.wpl_state.fisher, saved):
        np.testing.assert_array_equal(f.numpy(), s)
    assert task.validation_error(arch) == error
    assert [task.reward(a) for a in archs] == rewards
    assert "valid_iterator" in task.checkpoint_items()



@pytest.mark.slow
def test_restored_task_continues_the_training_stream(tmp_path):
    """A task restored from a checkpoint draws the training batches (augmented) that the
    saved task would have drawn next, not the stream's start again."""
    config = _config(augment=True)
    archs = [MicroCellSpace(num_nodes=2).sample(np.random.default_rng(k)) for k in range(3)]
    first = CNNSearchTask(MicroCellSpace(num_nodes=2), config, _splits(), seed=0)
    for arch in archs[:2]:
        first.train_architecture(arch, 2, wpl_active=False)
    path = tf.train.Checkpoint(**first.checkpoint_items()).write(str(tmp_path / "ckpt"))
    want = first.train_architecture(archs[2], 2, wpl_active=False)["loss"]
    second = CNNSearchTask(MicroCellSpace(num_nodes=2), config, _splits(), seed=0)
    tf.train.Checkpoint(**second.checkpoint_items()).read(path).assert_consumed()
    got = second.train_architecture(archs[2], 2, wpl_active=False)["loss"]
    assert got == pytest.approx(want, rel=1e-6)
    # The same restore, but with the stream at its start: other batches, another loss.
    tf.train.Checkpoint(**second.checkpoint_items()).read(path).assert_consumed()
    second._train_position = int(second.step.numpy())  # pretend the stream were already there
    second._train_iter = second._train_batches(0)       # ... but at its start
    assert second.train_architecture(archs[2], 2, wpl_active=False)["loss"] != pytest.approx(
        want, rel=1e-6)


def test_fisher_from_validation_batches_is_refused_by_the_cnn_task():
    with pytest.raises(NotImplementedError, match="fisher_source='train'"):
        CNNSearchTask(MicroCellSpace(num_nodes=2), _config(wpl=WPLConfig(fisher_source="valid")),
                      _splits(), seed=0)


def _param_count_by_hand(f, b, stem_mult, stages, normal_cells, classes, image_channels=3):
    """ENAS's search child counted from its definition (micro_child.py), independently of the
    supernet's code: stem conv + BN; per cell the calibration (1×1 conv + BN per input of the
    wrong width, factorised reduction + BN for a larger input), per node i, slot, input
    j < i + 2 and separable op two (depthwise k×k, pointwise C×C, BN γ and β); the output
    conv ((B + 2) C × C) + BN; a reduction cell's factorised reduction of the previous
    output; the dense head without bias."""
    bn = 2
    total = 3 * 3 * image_channels * (stem_mult * f) + bn * stem_mult * f
    width = stem_mult * f
    inputs = [(width, 1), (width, 1)]
    c, scale = f, 1
    for stage in range(stages):
        for reduction in [True] * (stage > 0) + [False] * normal_cells:
            if reduction:
                c, scale = 2 * c, 2 * scale
                total += 2 * inputs[1][0] * (c // 2) + bn * c  # reduce(h)
                inputs = [inputs[1], (c, scale)]
            if inputs[0][1] < scale:
                total += 2 * inputs[0][0] * (c // 2) + bn * c
            elif inputs[0][0] != c:
                total += inputs[0][0] * c + bn * c
            if inputs[1][0] != c:
                total += inputs[1][0] * c + bn * c
            per_slice = sum(k * k * c + c * c + bn * c for k in (3, 5))
            total += sum(2 * (i + 2) * 2 * per_slice for i in range(b))
            total += (b + 2) * c * c + bn * c
            inputs = [inputs[1], (c, scale)]
    return total + c * classes


@pytest.mark.parametrize("b, cells, stages, filters", [(2, 1, 2, 4), (3, 2, 3, 6), (1, 1, 1, 2)])
def test_parameter_count_matches_enas_search_child(b, cells, stages, filters):
    net = CNNSupernet(MicroCellSpace(num_nodes=b),
                      SupernetConfig(num_cells=cells, filters=filters, num_stages=stages))
    got = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
    assert got == _param_count_by_hand(filters, b, 3, stages, cells, 10)
    if (b, cells, stages, filters) == (2, 1, 2, 4):
        assert got == 22212  # the same sum written out once, for a reader's check


def test_calibration_only_on_a_shape_mismatch():
    """Cell 0 gets the 3F-wide stem twice (both 1×1), cell 1 the stem and an F-wide output
    (input 0 only); a reduction cell factorised-reduces its larger input 0 and takes
    reduce(h) as it is; the cells after it need nothing."""
    net = CNNSupernet(MicroCellSpace(num_nodes=2),
                      SupernetConfig(num_cells=2, filters=4, num_stages=3))
    kinds = [w.calibrate_kinds for w in net.cell_weights]
    assert kinds == [("conv", "conv"), ("conv", "none"), ("reduce", "none"), ("none", "none"),
                     ("none", "none"), ("reduce", "none"), ("none", "none"), ("none", "none")]
    assert [w.pre_reduce is not None for w in net.cell_weights] == [
        False, False, True, False, False, True, False, False]
    assert [w.channels for w in net.cell_weights] == [4, 4, 8, 8, 8, 16, 16, 16]


@pytest.mark.parametrize("mean, std", [(300.0, 0.5), (-50.0, 0.05), (1e-3, 1e-3), (0.0, 10.0)])
def test_batch_norm_moments_are_accurate_when_the_mean_dominates(mean, std):
    """The variance comes from sums shifted by the mean, not Σx²/n − μ² (which cancels: at
    mean 300, std 0.5 that form is off by 0.47 in normalised units)."""
    x = tf.constant(np.random.default_rng(0).normal(mean, std, (8, 4, 4, 3)), tf.float32)
    xd = x.numpy().astype(np.float64)
    want = (xd - xd.mean(axis=(0, 1, 2))) / np.sqrt(xd.var(axis=(0, 1, 2)) + 1e-5)
    got = batch_norm(x, tf.ones([3]), tf.zeros([3])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_batch_moments_sync_over_replicas_equals_whole_batch():
    """Two replicas, each with half the rows (one with none), give the whole batch's moments."""
    from wpl_keras.nas.spaces.cnn.supernet import batch_moments  # noqa: PLC0415 - local to this test
    x = np.random.default_rng(1).normal(5.0, 2.0, (6, 3, 3, 2)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    want_mean, want_var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    for rows in (slice(0, 6), slice(0, 0)):
        got = strategy.run(lambda t: batch_moments(t), args=(tf.constant(x[rows]),))
        if rows.stop:
            np.testing.assert_allclose(got[0].numpy(), want_mean, rtol=1e-5)
            np.testing.assert_allclose(got[1].numpy(), want_var, rtol=1e-4)
        else:  # an empty chunk: zero moments, no NaN
            assert np.all(np.isfinite(got[0].numpy())) and np.all(np.isfinite(got[1].numpy()))


def test_batch_norm_uses_batch_statistics():
    """batch_norm = γ (x − μ_B) / sqrt(σ²_B + 1e-5) + β with per-channel batch moments, and the
    supernet's output for one image depends on the rest of the batch in training and in
    evaluation (ENAS's search child runs every BN with is_training=True)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (5, 4, 4, 3)), tf.float32)
    scale = tf.constant([0.5, 1.0, 2.0])
    offset = tf.constant([0.1, -0.2, 0.3])
    xn = x.numpy().astype(np.float64)
    mean, var = xn.mean(axis=(0, 1, 2)), xn.var(axis=(0, 1, 2))
    want = scale.numpy() * (xn - mean) / np.sqrt(var + 1e-5) + offset.numpy()
    np.testing.assert_allclose(batch_norm(x, scale, offset).numpy(), want, rtol=1e-4, atol=1e-5)
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=1))
    images = tf.random.normal([6, 8, 8, 3])
    other = tf.concat([images[:2], 3.0 * tf.random.normal([4, 8, 8, 3])], axis=0)
    arch = tf.constant((0, 1, 1, 2, 2, 3, 0, 4) * 2, tf.int32)
    for training in (True, False):
        a = net((images, arch), training=training).numpy()
        b = net((other, arch), training=training).numpy()
        assert np.abs(a[:2] - b[:2]).max() > 1e-3  # the same two images, another batch
        np.testing.assert_allclose(net((images, arch), training=training).numpy(), a,
                                   rtol=1e-5, atol=1e-6)


def test_output_is_the_concat_of_loose_ends_then_conv_and_bn():
    """_combine equals BN(conv1x1(ReLU(concat(loose states)), W_loose)) written out with the
    loose ends gathered explicitly, for architectures with 1, 2 and 3 loose ends (unused
    cell inputs included)."""
    space = MicroCellSpace(num_nodes=3)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=1))
    weights = net.cell_weights[0]
    rng = np.random.default_rng(3)
    weights.out_bn[0].assign(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    weights.out_bn[1].assign(rng.normal(0, 1, 4).astype(np.float32))
    states = [tf.constant(rng.normal(0, 1, (3, 5, 5, 4)), tf.float32) for _ in range(5)]
    cases = {  # normal cell (in_x, op_x, in_y, op_y) per node → loose ends
        (0, 0, 1, 0, 2, 0, 2, 0, 3, 0, 3, 0): [4],
        (0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 2, 0): [1, 3, 4],
        (1, 0, 1, 0, 2, 0, 2, 0, 0, 0, 0, 0): [3, 4],
    }
    kernel = weights.out_kernel.numpy()
    gamma, beta = (v.numpy() for v in weights.out_bn)
    for normal, loose in cases.items():
        arch = normal + (0,) * 12
        decisions = net._decisions(tf.constant(arch, tf.int32))[0]
        np.testing.assert_array_equal(np.flatnonzero(net.loose_ends(decisions).numpy()), loose)
        got = net._combine(weights, decisions, states).numpy()
        concat = np.maximum(np.concatenate([states[k].numpy() for k in loose], -1), 0)
        w = np.concatenate([kernel[k] for k in loose], axis=0)  # [len(loose) C, C]
        y = np.einsum("nhwc,cd->nhwd", concat.astype(np.float64), w)
        mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
        np.testing.assert_allclose(got, gamma * (y - mean) / np.sqrt(var + 1e-5) + beta,
                                   rtol=1e-4, atol=1e-4)


def test_separable_op_is_two_relu_sepconv_bn_per_input(seed):
    """The sep3x3 op on input j of node 2, slot 0 is (ReLU → sep-conv → BN) twice with the
    ``[0, j, r]`` slices, written out with Keras-free NumPy-checked TF ops."""
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=1))
    weights = net.cell_weights[0].op_weights[0]["sep3x3"]
    rng = np.random.default_rng(1)
    for v in weights[2:]:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    x = tf.random.normal([3, 6, 6, 4])
    for j in (0, 1):
        got = net._op(x, tf.constant(OPS.index("sep3x3")), net.cell_weights[0].op_weights[0],
                      0, tf.constant(j))
        y = x
        for r in range(2):
            dw, pw, g, b = (v[0, j, r] for v in weights)
            z = tf.nn.depthwise_conv2d(tf.nn.relu(y), dw, [1, 1, 1, 1], "SAME")
            z = tf.nn.conv2d(z, pw, 1, "SAME")
            mean, var = tf.nn.moments(z, axes=[0, 1, 2])
            y = (z - mean) / tf.sqrt(var + 1e-5) * g + b
        np.testing.assert_allclose(got.numpy(), y.numpy(), rtol=1e-4, atol=1e-4)
    identity = net._op(x, tf.constant(OPS.index("identity")), net.cell_weights[0].op_weights[0],
                       0, tf.constant(0))
    np.testing.assert_array_equal(identity.numpy(), x.numpy())


def test_drop_path_only_in_training(seed):
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=1,
                                            drop_path_keep=0.5))
    images = tf.random.normal([16, 8, 8, 3])
    arch = tf.constant((0, 1, 1, 2, 2, 3, 0, 4) * 2, tf.int32)
    a = net((images, arch), training=False).numpy()
    np.testing.assert_allclose(net((images, arch), training=False).numpy(), a, atol=1e-6)
    b = net((images, arch), training=True).numpy()
    c = net((images, arch), training=True).numpy()
    assert not np.allclose(b, c)


def test_registry_builds_the_cnn_task_from_a_preset():
    import json

    from wpl_keras.data.cifar10 import CIFAR10Arrays
    from wpl_keras.experiments import enas, enas_cnn

    rng = np.random.default_rng(0)
    arrays = CIFAR10Arrays(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
                           rng.integers(0, 10, 40).astype(np.int32),
                           rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
                           rng.integers(0, 10, 8).astype(np.int32), "synthetic")
    for name in ("paper", "cpu-small", "tiny"):
        config = enas.get_preset("cnn", name)
        assert enas.ENASExperimentConfig.from_json(json.dumps(config.to_json())) == config
    config = enas.get_preset("cnn", "tiny")
    task = enas.get_space("cnn").build_task(arrays, config)
    assert isinstance(task, CNNSearchTask) and task.space.num_nodes == 2
    assert len(task.fixed_labels) == 16  # the held-out part of train, not test
    assert task.cfg is config.task and task.cfg.lr_epochs is None
    assert task.lr_epochs == config.search.epochs  # E of the cosine: the search's epochs
    with pytest.raises(ValueError, match="CNNSearchTask: epochs must be an integer >= 1"):
        CNNSearchTask(MicroCellSpace(num_nodes=2), _config(lr_epochs=None), _splits(), epochs=0)
    assert enas_cnn.preset("cpu_small").task.num_nodes == 3
    with pytest.raises(ValueError, match="unknown CNN preset"):
        enas_cnn.preset("huge")


def test_cnn_task_config_holds_one_wpl_config():
    import json

    from wpl_keras.experiments import enas

    config = enas.get_preset("cnn", "tiny").replace(
        task={"wpl": {"fisher_momentum": 0.5, "clip_norm": None, "mode": "gradient"}})
    assert config.task.wpl == WPLConfig(fisher_momentum=0.5, clip_norm=None, mode="gradient")
    assert enas.ENASExperimentConfig.from_json(json.dumps(config.to_json())) == config
    for old in ("fisher_momentum", "fisher_clip", "wpl_mode", "wpl_strength"):
        assert not hasattr(config.task, old)
    with pytest.raises(ValueError, match="unknown WPLConfig fields"):
        CNNTaskConfig(wpl={"momentum": 0.5})
    with pytest.raises(TypeError, match="CNNTaskConfig.wpl"):
        CNNTaskConfig(wpl=0.9)


def test_cnn_task_config_nests_model_and_optimizer():
    import json

    from wpl_keras.experiments import enas, enas_cnn
    from wpl_keras.nas.spaces.cnn.model import FinalConfig

    config = enas.get_preset("cnn", "cpu-small")
    task = config.task
    assert task.supernet == SupernetConfig(num_cells=1, filters=8, num_stages=2)
    assert task.optimizer == CNNOptimizerConfig()
    assert task.final == FinalConfig(num_cells=1, filters=16, num_stages=3, batch_size=64,
                                      lr_schedule="cosine")
    assert enas.get_preset("cnn", "paper").task.final == FinalConfig()
    assert enas.get_space("cnn").task_config_type is CNNTaskConfig  # one CNN task config
    assert not hasattr(enas_cnn, "CNNSearchConfig") and not hasattr(task, "search_config")
    changed = config.replace(task={"optimizer": {"lr_max": 0.1, "weight_decay": 0.0},
                                   "supernet": {"filters": 6, "num_cells": 2}})
    assert changed.task.optimizer == CNNOptimizerConfig(lr_max=0.1, weight_decay=0.0)
    # replace_fields: a dict changes only the fields it gives (num_stages 2 of cpu-small kept)
    assert changed.task.supernet == SupernetConfig(filters=6, num_cells=2, num_stages=2)
    assert enas.ENASExperimentConfig.from_json(json.dumps(changed.to_json())) == changed
    assert CNNTaskConfig.from_json(changed.task.to_json()) == changed.task
    for flat in ("num_cells", "filters", "num_stages", "lr_max", "momentum", "grad_clip",
                 "final_filters", "final_lr_max", "final_batch_size"):
        assert not hasattr(task, flat)
    final = config.replace(task={"final": {"filters": 8, "cutout": 0}}).task.final
    assert final == dataclasses.replace(config.task.final, filters=8, cutout=0)
    with pytest.raises(ValueError, match="unknown FinalConfig fields"):
        CNNTaskConfig(final={"epochs": 3})  # the length is train_epochs
    with pytest.raises(ValueError, match="unknown CNNOptimizerConfig fields"):
        CNNTaskConfig(optimizer={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown SupernetConfig fields"):
        CNNTaskConfig(supernet={"channels": 8})
    with pytest.raises(TypeError, match="CNNTaskConfig.supernet"):
        CNNTaskConfig(supernet=8)
    with pytest.raises(TypeError, match="CNNTaskConfig.optimizer"):
        CNNTaskConfig(optimizer=0.1)
    for bad in ({"lr_min": 0.1, "lr_max": 0.01}, {"momentum": 1.0}, {"weight_decay": -1.0},
                {"grad_clip": 0.0}):
        with pytest.raises(ValueError, match="CNNOptimizerConfig"):
            CNNOptimizerConfig(**bad)


@pytest.mark.slow
def test_checkpoint_restores_every_supernet_variable(tmp_path):
    """Every weight (calibrations, per-input op slices of normal and reduction cells, output
    convs, BN, optimizer slots, Fisher) comes back from a checkpoint, not only some."""
    config = _config(supernet=SupernetConfig(num_cells=1, filters=4, num_stages=2))
    space = MicroCellSpace(num_nodes=2)
    first = CNNSearchTask(space, config, _splits(), seed=0)
    first.train_architecture(space.sample(np.random.default_rng(0)), 2, wpl_active=False)
    items = first.checkpoint_items()
    checkpoint = tf.train.Checkpoint(**items)
    check_checkpoint_covers(checkpoint, items.values())
    path = checkpoint.write(str(tmp_path / "ckpt"))
    # A second task (its variables are made when it is built), with every variable moved
    # away from the saved value, so that each one that compares equal below was restored.
    second = CNNSearchTask(space, config, _splits(), seed=1)
    pairs = [pair for obj in ("supernet", "optimizer", "wpl_state")
             for pair in _aligned(getattr(first, obj).variables, getattr(second, obj).variables)]
    for a, b in pairs:
        b.assign(a.numpy() + 1)
    tf.train.Checkpoint(**second.checkpoint_items()).read(path).assert_consumed()
    for a, b in pairs:
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.name)


def _aligned(saved, got):
    """``saved`` and ``got`` paired (the same number, at least one)."""
    assert len(saved) == len(got) > 0
    return list(zip(saved, got))


@pytest.mark.parametrize("kind, field, value, error", [
    (SupernetConfig, "num_cells", 0, ValueError), (SupernetConfig, "filters", 2.0, TypeError),
    (SupernetConfig, "filters", 3, ValueError), (SupernetConfig, "dropout", 1.0, ValueError),
    (SupernetConfig, "drop_path_keep", np.float32("nan"), ValueError),
    (SupernetConfig, "num_classes", "10", TypeError),
    (CNNOptimizerConfig, "lr_max", -0.1, ValueError),
    (CNNOptimizerConfig, "momentum", 1.0, ValueError),
    (CNNOptimizerConfig, "weight_decay", None, TypeError),
    (CNNOptimizerConfig, "grad_clip", 0.0, ValueError),
    (CNNOptimizerConfig, "grad_clip", float("inf"), ValueError),
    (CNNTaskConfig, "batch_size", 0, ValueError), (CNNTaskConfig, "lr_epochs", 1.5, TypeError),
    (CNNTaskConfig, "fixed_valid_size", True, TypeError),
])
def test_cnn_configs_refuse_bad_numbers_naming_the_field(kind, field, value, error):
    with pytest.raises(error, match=f"{kind.__name__}.{field} must be"):
        kind(**{field: value})


def test_cnn_configs_take_numpy_scalars():
    config = CNNTaskConfig(batch_size=np.int64(8), optimizer=CNNOptimizerConfig(
        lr_max=np.float32(0.5), grad_clip=None))
    assert (config.batch_size, config.optimizer.lr_max) == (8, 0.5)
    assert type(config.batch_size) is int and type(config.optimizer.lr_max) is float


def test_one_replica_gradient_is_not_differentiated_through_the_op_switches():
    """On one replica the ops' gradients are chosen_op's backward switches: the traced
    gradient has none of the optionals TensorFlow adds when it differentiates through a
    switch whose branches have intermediates (that made the graph several times larger)."""
    space = MicroCellSpace(num_nodes=2)
    net = CNNSupernet(space, SupernetConfig(num_cells=1, filters=4, num_stages=2))

    def grads(images, arch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net((images, arch), training=True))
        return tape.gradient(loss, net.trainable_variables)

    graph = tf.function(grads, autograph=False).get_concrete_function(
        tf.TensorSpec([2, 8, 8, 3], tf.float32),
        tf.TensorSpec([space.num_decisions], tf.int32)).graph.as_graph_def()
    ops = [n.op for n in graph.node] + [n.op for f in graph.library.function
                                        for n in f.node_def]
    assert ops.count("FusedBatchNormGradV3") > 0
    assert ops.count("OptionalFromValue") == 0


def _enas_factorized_reduce(x, k1, k2):
    """ENAS's ``_factorized_reduction`` (before BN) as written there: a stride-2 1×1 conv of
    the input, and one of the input shifted by a pixel and zero-padded at the end."""
    shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
    return tf.concat([tf.nn.conv2d(x, k1, 2, "VALID"), tf.nn.conv2d(shifted, k2, 2, "VALID")],
                     axis=-1)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 7, 3), (2, 8, 7, 3), (2, 5, 6, 4),
                                   (1, 1, 1, 3), (1, 2, 3, 2)])
@pytest.mark.parametrize("static", [True, False])
def test_factorized_reduce_is_enas_formula_with_its_gradients(shape, static):
    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = tf.constant(rng.normal(size=shape), tf.float32)
    k1, k2 = (tf.constant(rng.normal(size=(1, 1, c, 3)), tf.float32) for _ in range(2))
    fn = factorized_reduce if static else tf.function(
        factorized_reduce, input_signature=[tf.TensorSpec([None, None, None, c]),
                                            tf.TensorSpec(k1.shape), tf.TensorSpec(k2.shape)])
    upstream = tf.constant(rng.normal(size=_enas_factorized_reduce(x, k1, k2).shape), tf.float32)
    got, want = [], []
    for f, out in ((fn, got), (_enas_factorized_reduce, want)):
        with tf.GradientTape() as tape:
            tape.watch([x, k1, k2])
            y = f(x, k1, k2)
            loss = tf.reduce_sum(y * upstream)
        out.extend([y] + tape.gradient(loss, [x, k1, k2]))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5)

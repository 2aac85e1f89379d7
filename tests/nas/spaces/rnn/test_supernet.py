import dataclasses
import json
import re
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data.ptb import PTBCorpus, batchify, bptt_window
from wpl_keras.nas.spaces.rnn.task import RNNSearchTask
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.nas.spaces.rnn.cell import (
    ROW_MASKS,
    apply_dropout_masks,
    apply_input_dropouts,
    batch_norm_rows,
    decode_architecture,
    draw_dropout_masks,
    enas_cell_sequence_inference,
    slice_dropout_masks,
)
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNOptimizerConfig, RNNSupernetConfig
from wpl_keras.nas.spaces.rnn.supernet import RNNSupernet
from wpl_keras.utils.checkpoint import VariableBundle
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.experiments.presets import cpu_small_rnn_task, paper_rnn_model, paper_rnn_task

V = 30


_MODEL_FIELDS = {f.name for f in dataclasses.fields(RNNModelConfig)}
_OPTIMIZER_FIELDS = {f.name for f in dataclasses.fields(RNNOptimizerConfig)}


def tiny_config(**kw):
    """cpu_small with tiny sizes; ``kw`` names fields of the config or of its ``model`` /
    ``optimizer`` (routed to the nested config that holds them)."""
    model = dict(num_nodes=4, vocab_size=V, embedding_size=6, hidden_size=6)
    optimizer, top = {}, dict(batch_size=3, bptt=4, eval_batch_size=2, eval_bptt=4)
    for name, value in kw.items():
        target = (model if name in _MODEL_FIELDS else
                  optimizer if name in _OPTIMIZER_FIELDS else top)
        target[name] = value
    return cpu_small_rnn_task(model=RNNModelConfig(**model),
                                       optimizer=RNNOptimizerConfig(**optimizer), **top)


@pytest.fixture(scope="module")
def task():
    """One tiny task shared by the tests below (tracing dominates their cost), with the
    search schedule's α 60 written into its WPL state as the driver does."""
    task = RNNSearchTask(tiny_corpus(), tiny_config(weight_drop=0.0, wpl=WPLConfig(clip_norm=1e9)),
                         seed=0)
    task.wpl_state.strength.assign(60.0)
    return task


def tiny_corpus(seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda n: rng.integers(0, V, n).astype(np.int32)  # noqa: E731
    return PTBCorpus(ids(400), ids(120), ids(60), [f"w{i}" for i in range(V)], {})


ACT = {0: tf.tanh, 1: lambda a: tf.nn.relu(a), 2: lambda a: a, 3: tf.sigmoid}


def reference_logits(net, tokens, arch, state, max_norm=None, path=None, last_node=False):
    """Plain unrolled ENAS cell (static architecture), no dropout; with ``max_norm`` each
    step's state rows are rescaled to that norm (the scale a constant for gradients); with
    ``path`` (``N − 1`` scales) node ``i`` reads ``path[i − 1] · s_in(i)``; with
    ``last_node`` the output is the loose-end mean and the carried state the last node."""
    space = RNNCellSpace(net.cfg.model.num_nodes)
    acts, inputs, loose = space.activation_ids(arch), space.inputs(arch), space.loose_ends(arch)
    H = net.cfg.model.hidden_size
    emb = tf.convert_to_tensor(net.embedding)
    W = tf.convert_to_tensor(net.w_nodes)
    h = state
    outs = []
    for t in range(tokens.shape[1]):
        x = tf.gather(emb, tokens[:, t])
        z = x @ net.w_x + h @ net.w_h
        s = [h + tf.sigmoid(z[:, :H]) * (ACT[acts[0]](z[:, H:]) - h)]
        for i in range(1, len(acts)):
            p = s[inputs[i - 1]] * (1.0 if path is None else path[i - 1])
            z = p @ W[i * (i - 1) // 2 + inputs[i - 1]]
            s.append(p + tf.sigmoid(z[:, :H]) * (ACT[acts[i]](z[:, H:]) - p))
        h = out = tf.add_n([s[j] for j in loose]) / len(loose)
        if last_node:
            h = s[-1]
        if max_norm is not None:
            norm = tf.norm(h, axis=-1, keepdims=True)
            h = h * tf.stop_gradient(tf.minimum(1.0, max_norm / norm))
        outs.append(out if last_node else h)
    out = tf.stack(outs, axis=1)
    return out @ tf.transpose(emb) + net.decoder_bias, h


def test_config_presets_and_checks():
    paper = paper_rnn_task()
    assert (paper.model.hidden_size, paper.model.embedding_size, paper.model.num_nodes,
            paper.batch_size, paper.bptt, paper.model.vocab_size) == (1000, 1000, 12, 64, 35,
                                                                     10000)
    assert (paper.optimizer.lr_decay, paper.optimizer.grad_clip, paper.optimizer.l2,
            paper.wpl.fisher_momentum) == (0.96, 0.25, 1e-7, 0.9)
    assert cpu_small_rnn_task().model.hidden_size <= 256
    with pytest.raises(ValueError, match="tied"):
        RNNModelConfig(embedding_size=10, hidden_size=12)
    with pytest.raises(ValueError, match="input_dropout"):
        RNNModelConfig(input_dropout=1.0)


def test_decode_architecture():
    acts, inputs, loose, rows = decode_architecture(tf.constant([1, 0, 0, 0, 3, 1, 2]), 4)
    np.testing.assert_array_equal(acts, [1, 0, 3, 2])
    np.testing.assert_array_equal(inputs, [0, 0, 1])
    np.testing.assert_allclose(loose, [0, 0, 0.5, 0.5])
    np.testing.assert_array_equal(rows, [0, 1, 4])


def _run_against_reference(net, tokens, arch, state, max_norm=None, last_node=False):
    """Supernet and unrolled reference on the same input; returns their outputs, states and
    gradients w.r.t. every supernet weight (and the supernet's raw node-matrix gradient)."""
    with tf.GradientTape(persistent=True) as tape:
        logits, new_state = net(tokens, tf.constant(arch), state, training=False)
        ref, ref_state = reference_logits(net, tokens, arch, state, max_norm=max_norm,
                                          last_node=last_node)
        loss = tf.reduce_sum(tf.sin(logits)) + tf.reduce_sum(new_state**2)
        ref_loss = tf.reduce_sum(tf.sin(ref)) + tf.reduce_sum(ref_state**2)
    variables = [net.embedding, net.w_x, net.w_h, net.w_nodes, net.decoder_bias]
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    ref_grads = [tf.convert_to_tensor(g) for g in tape.gradient(ref_loss, variables)]
    return (logits, new_state, grads), (ref, ref_state, ref_grads), tape.gradient(loss, net.w_nodes)


def _assert_matches(ours, reference):
    (logits, new_state, grads), (ref, ref_state, ref_grads) = ours, reference
    np.testing.assert_allclose(logits, ref, atol=1e-5)
    np.testing.assert_allclose(new_state, ref_state, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=1e-4)


def test_forward_matches_reference_and_gradients(seed):
    cfg = tiny_config()
    net = RNNSupernet(cfg, seed=1)
    rng = np.random.default_rng(0)
    tokens = tf.constant(rng.integers(0, V, (3, 5)), tf.int32)
    state = tf.constant(rng.normal(size=(3, 6)), tf.float32)
    for arch in [(1, 0, 0, 0, 3, 1, 2), (3, 0, 2, 1, 1, 2, 0)]:
        ours, reference, node_grad = _run_against_reference(net, tokens, arch, state)
        assert ours[0].shape == (3, 5, V) and ours[1].shape == (3, 6)
        _assert_matches(ours, reference)
        assert isinstance(node_grad, tf.IndexedSlices)
        np.testing.assert_array_equal(np.sort(node_grad.indices), np.sort(net.wpl_rows(arch)))


def test_state_norm_clamp_matches_reference_with_gradients(seed):
    """A small hidden_max_norm makes the per-step clamp act; values and gradients still match
    the unrolled reference (all four activations, fan-out, several loose ends)."""
    cfg = tiny_config(hidden_max_norm=0.3, init_range=0.5)
    net = RNNSupernet(cfg, seed=3)
    rng = np.random.default_rng(1)
    tokens = tf.constant(rng.integers(0, V, (3, 6)), tf.int32)
    state = tf.constant(rng.normal(size=(3, 6)), tf.float32)
    for arch in [(1, 0, 0, 0, 3, 1, 2), (2, 0, 1, 0, 1, 1, 3)]:
        ours, reference, _ = _run_against_reference(net, tokens, arch, state, max_norm=0.3)
        np.testing.assert_allclose(tf.norm(ours[1], axis=-1), 0.3, rtol=1e-4)
        _assert_matches(ours, reference)


def test_different_architectures_give_different_outputs(seed):
    net = RNNSupernet(tiny_config(), seed=2)
    tokens = tf.constant(np.arange(12).reshape(3, 4) % V, tf.int32)
    a, _ = net(tokens, tf.constant([0, 0, 0, 0, 0, 0, 0]))
    b, _ = net(tokens, tf.constant([1, 0, 2, 1, 3, 2, 1]))
    assert a.shape == b.shape == (3, 4, V)
    assert np.abs(a.numpy() - b.numpy()).max() > 1e-4


def test_dropout_masks_drawn_once_and_split_by_rows_equal_the_drawn_in_call_ones():
    """Masks drawn for the global batch, then applied (whole or split by rows), give what a
    call that draws its own masks gives; the seed generator advances by the same draws."""
    cfg = tiny_config()  # cpu_small keeps every dropout on
    tokens = tf.constant(np.arange(24).reshape(4, 6) % V, tf.int32)
    arch = tf.constant([1, 0, 2, 1, 3, 2, 1])
    own, pre = RNNSupernet(cfg, seed=5), RNNSupernet(cfg, seed=5)
    expected, state_own = own(tokens, arch, training=True)
    masks = pre.dropout_masks(4)
    assert set(masks) == {"word", "input", "w_h", "w_nodes", "output"}
    assert masks["input"].shape == (4, 6) and masks["output"].shape == (4, 1, 6)
    assert masks["w_nodes"].shape == (3, 6, 12) and masks["word"].shape == (V,)
    whole, state_pre = pre(tokens, arch, training=True, dropout_masks=masks)
    np.testing.assert_array_equal(whole.numpy(), expected.numpy())
    np.testing.assert_array_equal(state_pre.numpy(), state_own.numpy())
    np.testing.assert_array_equal(pre.seed_generator.state.numpy(),
                                  own.seed_generator.state.numpy())
    for start, size in ((0, 2), (2, 2), (1, 3)):  # rows of a replica, e.g. 2 of 2 replicas
        part = slice_dropout_masks(masks, start, size)
        for name, m in part.items():
            want = masks[name][start:start + size] if name in ROW_MASKS else masks[name]
            np.testing.assert_array_equal(m.numpy(), want.numpy())
        rows, _ = pre(tokens[start:start + size], arch, training=True, dropout_masks=part)
        np.testing.assert_allclose(rows.numpy(), expected.numpy()[start:start + size],
                                   rtol=1e-6, atol=1e-6)
    # The functional form (used by the fixed-cell model) draws the input-side masks only.
    x = tf.ones([6, 4, 6])
    w_h, w_nodes = tf.ones([6, 12]), tf.ones([3, 6, 12])
    got = apply_input_dropouts(x, tokens, w_h, w_nodes, cfg.model, keras.random.SeedGenerator(9))
    drawn = draw_dropout_masks(4, cfg.model, keras.random.SeedGenerator(9),
                               node_shape=[3, 6, 12], output=False)
    assert "output" not in drawn
    for a, b in zip(got, apply_dropout_masks(x, tokens, w_h, w_nodes, drawn)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    off = tiny_config(weight_drop=0.0, output_dropout=0.0, embedding_dropout=0.0,
                      input_dropout=0.0)
    assert RNNSupernet(off, seed=0).dropout_masks(4) == {}


@pytest.mark.slow
def test_one_trace_over_many_architectures(task):
    rng = np.random.default_rng(3)
    for k in range(6):
        task.train_architecture(task.space.sample(rng), 1, wpl_active=bool(k % 2))
        task.validation_error(task.space.sample(rng))
        task.reward(task.space.sample(rng))
    assert task.trace_count == 1
    assert task._eval_step.experimental_get_tracing_count() == 1
    assert task._snapshot.experimental_get_tracing_count() == 1
    assert task.fisher_trace_count == 0  # fisher_source="train": no validation pass


def test_wpl_touches_only_the_sampled_rows(task):
    state = task.wpl_state
    state.reset_fisher()
    w = task.supernet.w_nodes
    arch = (0, 0, 1, 1, 2, 2, 3)  # nodes 1..3 read 0, 1, 2
    rows = sorted(task.space.edge_rows(arch))
    others = [r for r in range(task.space.num_pairs) if r not in rows]
    anchors_before = state.anchors[0].numpy()
    w_before = w.numpy()
    task.train_architecture(arch, 2, wpl_active=True)
    fisher = state.fisher[0].numpy()
    anchors = state.anchors[0].numpy()
    # Fisher only on used rows, anchors of used rows = current weights, others unchanged.
    assert np.all(fisher[others] == 0) and np.all(fisher[rows].sum(axis=(1, 2)) > 0)
    np.testing.assert_array_equal(anchors[others], anchors_before[others])
    np.testing.assert_allclose(anchors[rows], w.numpy()[rows])
    # Unused node matrices got no update (not even L2).
    np.testing.assert_array_equal(w.numpy()[others], w_before[others])
    assert not np.allclose(w.numpy()[rows], w_before[rows])
    # The penalty covers only the used rows: perturb an unused row, then a used one.
    rows_t = task.supernet.wpl_rows(arch)
    state.fisher[0].assign(tf.ones_like(state.fisher[0]))
    w.assign(state.anchors[0])
    w.assign(w.numpy() + np.eye(task.space.num_pairs)[others[0]][:, None, None])
    assert float(state.penalty(index=0, rows=rows_t)) == 0.0
    w.assign(w.numpy() + np.eye(task.space.num_pairs)[rows[0]][:, None, None] * 0.1)
    assert float(state.penalty(index=0, rows=rows_t)) > 0.0
    out = task.train_architecture(arch, 1, wpl_active=True)
    assert out["penalty"] > 0.0
    assert task.train_architecture(arch, 1, wpl_active=False)["penalty"] == 0.0


def test_fisher_update_formula_on_last_batch(task):
    arch = (2, 0, 0, 1, 1, 0, 3)
    rows = np.asarray(task.supernet.wpl_rows(arch))
    task.wpl_state.reset_fisher()
    count = int(task.wpl_state.num_fisher_updates.numpy())
    task.train_architecture(arch, 2, wpl_active=False)
    assert np.all(task.wpl_state.fisher[0].numpy() == 0)  # WPL off: no Fisher
    task.train_architecture(arch, 3, wpl_active=True)
    assert int(task.wpl_state.num_fisher_updates.numpy()) == count + 1  # last batch only
    f = task.wpl_state.fisher[0].numpy()[rows]
    assert np.all(f >= 0) and f.max() > 0
    others = np.setdiff1d(np.arange(task.space.num_pairs), rows)
    assert np.all(task.wpl_state.fisher[0].numpy()[others] == 0)


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_wpl_scope_all_covers_the_dense_shared_weights(mode):
    cfg = tiny_config(wpl_scope="all", wpl=WPLConfig(mode=mode, clip_norm=1e9),
                      weight_drop=0.0, output_dropout=0.0, embedding_dropout=0.0,
                      input_dropout=0.0, grad_clip=1e9, learning_rate=0.5)
    task = RNNSearchTask(tiny_corpus(), cfg, seed=0)
    net, state = task.supernet, task.wpl_state
    state.strength.assign(3.0)
    assert len(state.protected_variables) == 5 and state.protected_variables[3] is net.w_h
    arch = (0, 0, 1, 1, 2, 2, 3)
    task.train_architecture(arch, 1, wpl_active=True)
    # Fisher of every dense weight from the step's gradient, anchors = the weights after it.
    for k, v in enumerate([net.embedding, net.w_x, net.w_h, net.decoder_bias], start=1):
        assert float(tf.reduce_max(state.fisher[k])) > 0.0
        np.testing.assert_array_equal(state.anchors[k].numpy(), v.numpy())
    # One step with and one without WPL from the same state. Gradient mode: they differ by
    # lr · α F (θ − θ*) in w_h. Proximal mode: the WPL step is the plain step θ̃ pulled to
    # θ* + (θ̃ − θ*) / (1 + lr α F).
    fisher_w_h = np.full(net.w_h.shape, 2.0, np.float32)
    start = [v.numpy() for v in net.weights]
    position, carried = task.train_position.numpy(), task.train_state.numpy()
    anchor_w_h = state.anchors[3].numpy()
    after = {}
    for active in (True, False):
        for v, x in zip(net.weights, start):
            v.assign(x)
        net.w_h.assign(anchor_w_h + 0.1)
        state.fisher[3].assign(fisher_w_h)
        state.anchors[3].assign(anchor_w_h)
        task.train_position.assign(position)
        task.train_state.assign(carried)
        out = task.train_architecture(arch, 1, wpl_active=active)
        after[active] = net.w_h.numpy()
        assert (out["penalty"] > 0.0) == active
    k = 0.5 * 3.0 * 2.0
    if mode == "gradient":
        np.testing.assert_allclose(after[False] - after[True], k * 0.1, rtol=1e-4)
    else:
        np.testing.assert_allclose(after[True], anchor_w_h + (after[False] - anchor_w_h) / (1 + k),
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="wpl_scope"):
        tiny_config(wpl_scope="embedding")
    with pytest.raises(ValueError, match="mode"):
        tiny_config(wpl={"mode": "implicit"})


def test_epoch_lr_schedule_and_checkpoint(seed, tmp_path):
    task = RNNSearchTask(tiny_corpus(), tiny_config(), seed=0)
    task.start_epoch(17)
    np.testing.assert_allclose(float(task.optimizer.learning_rate), 20.0 * 0.96**2, rtol=1e-6)
    task.train_architecture((0, 0, 0, 0, 0, 0, 0), 2, wpl_active=True)
    ckpt = tf.train.Checkpoint(**task.checkpoint_items())
    path = ckpt.save(str(tmp_path / "ckpt"))
    other = RNNSearchTask(tiny_corpus(), tiny_config(), seed=5)
    tf.train.Checkpoint(**other.checkpoint_items()).restore(path).assert_consumed()
    np.testing.assert_array_equal(other.supernet.w_nodes.numpy(), task.supernet.w_nodes.numpy())
    np.testing.assert_array_equal(other.wpl_state.fisher[0].numpy(),
                                  task.wpl_state.fisher[0].numpy())
    assert int(other.train_position.numpy()) == 2
    np.testing.assert_array_equal(other.train_state.numpy(), task.train_state.numpy())
    assert isinstance(task.checkpoint_items()["supernet"], VariableBundle)
    assert task.config()["model"]["hidden_size"] == 6


def test_validation_is_fixed_and_reward_moves(task):
    arch = (0, 0, 1, 0, 2, 1, 3)
    e1, e2 = task.validation_error(arch), task.validation_error(arch)
    assert e1 == e2 and 1.0 < e1 < 10 * V
    r1, r2 = task.reward(arch), task.reward(arch)
    assert r1 > 0 and r2 > 0 and r1 != r2
    with pytest.raises(ValueError, match="vocab"):
        RNNSearchTask(tiny_corpus(), tiny_config(vocab_size=V + 1))


def test_config_holds_one_wpl_config_with_json_round_trip():
    cfg = tiny_config(wpl=WPLConfig(fisher_momentum=0.5, clip_norm=None, mode="gradient"),
                      wpl_scope="all", strategy="mirrored")
    again = RNNSupernetConfig.from_json(json.dumps(cfg.to_json()))
    assert again == cfg and isinstance(again.wpl, WPLConfig) and again.strategy == "mirrored"
    assert RNNSupernetConfig().strategy == "auto"
    assert cfg.to_json()["wpl"] == cfg.wpl.to_json()
    assert {k: cfg.to_json()["wpl"][k] for k in ("fisher_momentum", "clip_norm", "mode")} == {
        "fisher_momentum": 0.5, "clip_norm": None, "mode": "gradient"}
    # A dict is read as WPLConfig (the constructor path of saved experiment configs).
    assert RNNSupernetConfig(**dataclasses.asdict(cfg)) == cfg
    assert dataclasses.replace(cfg, wpl={"mode": "proximal"}).wpl == WPLConfig(mode="proximal")
    assert RNNSupernetConfig().wpl == WPLConfig()
    moved = {"wpl_strength": "strength", "wpl_momentum": "wpl.fisher_momentum",
             "wpl_clip_norm": "wpl.clip_norm", "wpl_mode": "wpl.mode"}
    for old, where in moved.items():
        with pytest.raises(ValueError, match=rf"\['{old}'\] were removed.*{where}"):
            RNNSupernetConfig.from_json({**cfg.to_json(), old: 1})
    with pytest.raises(ValueError, match="unknown RNNSupernetConfig fields"):
        RNNSupernetConfig.from_json({"hiden_size": 8})
    with pytest.raises(ValueError, match="unknown WPLConfig fields"):
        RNNSupernetConfig.from_json({"wpl": {"momentum": 0.5}})
    with pytest.raises(ValueError, match="fisher_momentum"):
        tiny_config(wpl={"fisher_momentum": 0.0})
    with pytest.raises(TypeError, match="WPLConfig"):
        tiny_config(wpl=0.9)


def test_config_is_nested_by_concern_and_reads_json_objects():
    cfg = tiny_config(hidden_size=8, embedding_size=8, learning_rate=3.0, l2=0.0)
    as_json = cfg.to_json()
    assert as_json["model"]["hidden_size"] == 8 and as_json["optimizer"]["learning_rate"] == 3.0
    assert "hidden_size" not in as_json and "learning_rate" not in as_json
    assert RNNSupernetConfig.from_json(json.dumps(as_json)) == cfg
    # A JSON object in place of a nested config is read through its from_json (all of it).
    again = dataclasses.replace(cfg, model={"hidden_size": 4, "embedding_size": 4},
                                optimizer={"grad_clip": 2.0})
    assert again.model == RNNModelConfig(hidden_size=4, embedding_size=4)
    assert again.optimizer == RNNOptimizerConfig(grad_clip=2.0)
    for nested, kind in (("model", "RNNModelConfig"), ("optimizer", "RNNOptimizerConfig")):
        with pytest.raises(ValueError, match=f"unknown {kind} fields: \\['hiden_size'\\]"):
            RNNSupernetConfig.from_json({nested: {"hiden_size": 8}})
        with pytest.raises(TypeError, match=f"RNNSupernetConfig.{nested} must be a {kind}"):
            RNNSupernetConfig(**{nested: 0.5})
    # The presets take nested configs (or their JSON objects) as keyword overrides.
    small = cpu_small_rnn_task(optimizer=RNNOptimizerConfig(learning_rate=10.0))
    assert small.optimizer.learning_rate == 10.0 and small.model.hidden_size == 256
    paper = paper_rnn_task(model={"num_nodes": 3}, bptt=7)
    assert paper.model == RNNModelConfig(num_nodes=3) and paper.bptt == 7
    assert paper_rnn_task().model == paper_rnn_model()
    assert paper_rnn_task(model=paper_rnn_model(num_nodes=3)).model.init_range == (
        0.025)


def test_old_flat_config_names_where_each_field_lives_now():
    flat = {"num_nodes": 4, "vocab_size": V, "embedding_size": 6, "hidden_size": 6,
            "batch_size": 3, "learning_rate": 20.0, "lr_decay": 0.96, "grad_clip": 0.25,
            "l2": 1e-7, "weight_drop": 0.5, "output_dropout": 0.4, "init_range": 0.04,
            "hidden_max_norm": 25.0, "lr_decay_start_epoch": 15, "input_dropout": 0.65,
            "embedding_dropout": 0.1}
    with pytest.raises(ValueError) as info:
        RNNSupernetConfig.from_json(flat)
    message = str(info.value)
    for name in flat:
        if name == "batch_size":
            assert "batch_size ->" not in message
            continue
        group = "optimizer" if name in _OPTIMIZER_FIELDS else "model"
        assert f"{name} -> `{group}.{name}`" in message, name
    with pytest.raises(ValueError, match=r"\['grad_clip'\] were removed.*optimizer.grad_clip"):
        RNNSupernetConfig.from_json({**tiny_config().to_json(), "grad_clip": 1.0})


@pytest.mark.parametrize("kind, field, value", [
    (RNNModelConfig, "num_nodes", 1), (RNNModelConfig, "num_nodes", 4.0),
    (RNNModelConfig, "vocab_size", 0), (RNNModelConfig, "embedding_size", True),
    (RNNModelConfig, "weight_drop", 1.0), (RNNModelConfig, "output_dropout", -0.1),
    (RNNModelConfig, "embedding_dropout", float("nan")), (RNNModelConfig, "input_dropout", "0.5"),
    (RNNModelConfig, "init_range", 0.0), (RNNModelConfig, "hidden_max_norm", -1.0),
    (RNNModelConfig, "hidden_max_norm", float("inf")),
    (RNNModelConfig, "path_keep", 0.0), (RNNModelConfig, "path_keep", 1.1),
    (RNNModelConfig, "path_keep", "0.9"), (RNNModelConfig, "weight_drop_scope", "nodes"),
    (RNNModelConfig, "batch_norm_init", "ones"), (RNNModelConfig, "output_batch_norm", 1),
    (RNNModelConfig, "recurrent_state", "last"),
    (RNNOptimizerConfig, "learning_rate", 0.0), (RNNOptimizerConfig, "learning_rate", "20"),
    (RNNOptimizerConfig, "lr_decay", 0.0), (RNNOptimizerConfig, "lr_decay", 1.5),
    (RNNOptimizerConfig, "lr_decay_start_epoch", -1),
    (RNNOptimizerConfig, "lr_decay_start_epoch", 1.5),
    (RNNOptimizerConfig, "grad_clip", 0.0), (RNNOptimizerConfig, "grad_clip", float("nan")),
    (RNNOptimizerConfig, "l2", -1e-7),
    (RNNSupernetConfig, "batch_size", 0), (RNNSupernetConfig, "bptt", 2.5),
    (RNNSupernetConfig, "eval_batch_size", None), (RNNSupernetConfig, "eval_bptt", -3),
    (RNNSupernetConfig, "reward_constant", 0.0), (RNNSupernetConfig, "jit_compile", "yes"),
    (RNNSupernetConfig, "wpl_scope", "dense"), (RNNSupernetConfig, "strategy", "tpu"),
    (RNNSupernetConfig, "strategy", None),
])
def test_config_validation_names_the_field_and_value(kind, field, value):
    kwargs = {field: value}
    if field in ("hidden_size", "embedding_size"):
        kwargs = {"hidden_size": value, "embedding_size": value}
    # A numeric field refuses a non-number (a float for a count) with a TypeError, a number out
    # of range with a ValueError; a choice or bool field refuses anything else with a ValueError.
    default = getattr(kind(), field)
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    count = isinstance(default, int)
    not_a_number = isinstance(value, (str, bool, type(None))) or (
        count and isinstance(value, float))
    error = TypeError if numeric and not_a_number else ValueError
    with pytest.raises(error,
                       match=rf"{kind.__name__}\.{field} must .*{re.escape(repr(value))}"):
        kind(**kwargs)


def test_optimizer_rate_is_the_decayed_schedule():
    opt = RNNOptimizerConfig(learning_rate=20.0, lr_decay=0.5, lr_decay_start_epoch=2)
    assert [opt.rate(e) for e in range(5)] == [20.0, 20.0, 20.0, 10.0, 5.0]
    task_lr = RNNSearchTask(tiny_corpus(), tiny_config(learning_rate=20.0, lr_decay=0.5,
                                                       lr_decay_start_epoch=2))
    assert task_lr.learning_rate_at(4) == 5.0


def _no_dropout(**kw):
    """tiny_config with every dropout off unless ``kw`` sets it."""
    rates = dict(weight_drop=0.0, output_dropout=0.0, embedding_dropout=0.0, input_dropout=0.0)
    return tiny_config(**{**rates, **kw})


@pytest.mark.parametrize("scope", ["cell", "all"])
def test_fisher_update_follows_the_wpl_config(scope):
    """``F ← clip((1 − η_F) F + η_F g²)`` with ``η_F`` and the clip norm of ``config.wpl``;
    the architecture's node rows are clipped as one block, a dense weight as a whole."""
    eta, clip, f0 = 0.25, 5e-4, 1e-4
    task = RNNSearchTask(tiny_corpus(), _no_dropout(
        wpl_scope=scope, wpl=WPLConfig(fisher_momentum=eta, clip_norm=clip)), seed=0)
    net, state = task.supernet, task.wpl_state
    assert (state.fisher_momentum, state.clip_norm, float(state.strength)) == (eta, clip, 0.0)
    dense = [net.embedding, net.w_x, net.w_h, net.decoder_bias]
    assert list(state.protected_variables) == [net.w_nodes] + (dense if scope == "all" else [])
    arch = (1, 0, 2, 1, 3, 0, 0)
    rows = net.wpl_rows(arch).numpy()
    x, y = task._window(task._train, task.train_position, task.cfg.bptt)
    with tf.GradientTape() as tape:
        logits, _ = net(x, tf.constant(arch), tf.convert_to_tensor(task.train_state))
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits))
    grads = [tf.convert_to_tensor(g).numpy()
             for g in tape.gradient(loss, list(state.protected_variables))]
    for f in state.fisher:
        f.assign(tf.fill(f.shape, f0))
    out = task.train_architecture(arch, 1, wpl_active=True)
    assert out["penalty"] == 0.0  # α is 0 until the search driver writes it

    def expected(g):
        new = (1 - eta) * f0 + eta * g.astype(np.float64) ** 2
        return new * min(1.0, clip / np.linalg.norm(new))

    fisher = state.fisher[0].numpy()
    np.testing.assert_allclose(fisher[rows], expected(grads[0][rows]), rtol=1e-5, atol=1e-12)
    others = np.setdiff1d(np.arange(task.space.num_pairs), rows)
    assert np.all(fisher[others] == np.float32(f0))
    for k in range(1, len(state.fisher)):
        np.testing.assert_allclose(state.fisher[k].numpy(), expected(grads[k]), rtol=1e-5,
                                   atol=1e-12)
    assert int(state.num_fisher_updates.numpy()) == 1


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_cell_scope_wpl_acts_on_the_node_rows_only(mode):
    """Gradient mode: a WPL step differs from a plain one by ``lr α F (θ − θ*)`` on the
    architecture's node rows; proximal mode: it is the plain step pulled to
    ``θ* + (θ̃ − θ*) / (1 + lr α F)``. Other rows and the dense weights are the same in both;
    the reported penalty is ``(α/2) Σ F (θ − θ*)²`` over the rows at the step's start."""
    lr, alpha, fisher, offset = 0.5, 3.0, 2.0, 0.1
    task = RNNSearchTask(tiny_corpus(), _no_dropout(
        wpl=WPLConfig(mode=mode, clip_norm=1e9), grad_clip=1e9, learning_rate=lr, l2=0.0),
        seed=0)
    net, state = task.supernet, task.wpl_state
    state.strength.assign(alpha)
    arch = (0, 0, 1, 1, 2, 2, 3)
    rows = sorted(task.space.edge_rows(arch))
    others = [r for r in range(task.space.num_pairs) if r not in rows]
    start = [v.numpy() for v in net.weights]
    position, carried = task.train_position.numpy(), task.train_state.numpy()
    anchor = net.w_nodes.numpy() - offset
    after = {}
    for active in (True, False):
        for v, value in zip(net.weights, start):
            v.assign(value)
        state.fisher[0].assign(tf.fill(state.fisher[0].shape, fisher))
        state.anchors[0].assign(anchor)
        task.train_position.assign(position)
        task.train_state.assign(carried)
        out = task.train_architecture(arch, 1, wpl_active=active)
        after[active] = {v.name: v.numpy() for v in net.weights}
        expected = 0.5 * alpha * fisher * offset**2 * anchor[rows].size if active else 0.0
        np.testing.assert_allclose(out["penalty"], expected, rtol=1e-4)
    on, off = after[True], after[False]
    for name in on:
        if name != "w_nodes":
            np.testing.assert_array_equal(on[name], off[name])
    np.testing.assert_array_equal(on["w_nodes"][others], off["w_nodes"][others])
    k = lr * alpha * fisher
    if mode == "gradient":
        np.testing.assert_allclose(off["w_nodes"][rows] - on["w_nodes"][rows], k * offset,
                                   rtol=1e-3)
    else:
        np.testing.assert_allclose(on["w_nodes"][rows],
                                   anchor[rows] + (off["w_nodes"][rows] - anchor[rows]) / (1 + k),
                                   rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------- the release's supernet options
def test_paper_model_is_the_release_search_supernet_and_cpu_presets_keep_theirs():
    """models/shared_rnn.py of the WPL release (mode "train"): init ±0.025, weight-drop on
    w_hc/w_hh only, BatchNorm1d on the cell output (every parameter, BN's included, drawn
    uniform), no path dropping."""
    model = paper_rnn_task().model
    assert (model.init_range, model.weight_drop_scope, model.output_batch_norm,
            model.batch_norm_init, model.recurrent_state, model.path_keep) == (
        0.025, "recurrent", True, "uniform", "last_node", 1.0)
    small = cpu_small_rnn_task().model
    assert (small.init_range, small.weight_drop_scope, small.output_batch_norm,
            small.recurrent_state, small.path_keep) == (0.04, "all", False, "loose_mean", 1.0)
    again = RNNSupernetConfig.from_json(json.dumps(paper_rnn_task().to_json()))
    assert again == paper_rnn_task()
    net = RNNSupernet(paper_rnn_task(model=paper_rnn_model(
        num_nodes=3, vocab_size=V, embedding_size=6, hidden_size=6)), seed=0)
    for w in net.dense_weights() + [net.w_nodes]:
        values = np.asarray(w)
        if w is not net.decoder_bias:
            assert np.abs(values).max() <= 0.025 and np.abs(values).max() > 0.01, w.name
    assert not np.array_equal(net.bn_gamma.numpy(), net.bn_beta.numpy())


def test_batch_norm_rows_normalises_each_step_over_the_rows():
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 2.0, size=(5, 7, 4)).astype(np.float32)
    gamma, beta = np.float32([1.0, 2.0, -0.5, 0.3]), np.float32([0.0, 1.0, 0.2, -3.0])
    y = batch_norm_rows(tf.constant(x), gamma, beta).numpy()
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(y.mean(axis=1), np.broadcast_to(beta, (5, 4)), atol=1e-5)
    np.testing.assert_allclose(y.std(axis=1), np.broadcast_to(np.abs(gamma), (5, 4)), rtol=1e-3)
    # Given moments (a standalone model's moving averages) replace the batch's.
    fixed = batch_norm_rows(tf.constant(x), gamma, beta, mean=np.float32(1.0),
                            variance=np.float32(4.0)).numpy()
    np.testing.assert_allclose(fixed, gamma * (x - 1.0) / np.sqrt(4.0 + 1e-5) + beta, rtol=1e-5)


def _cell_outputs(net, tokens, arch, state, path_mask=None):
    """The supernet's cell outputs ``[T, B, H]`` (no dropout), from its own weights."""
    cfg = net.cfg.model
    x = tf.gather(tf.convert_to_tensor(net.embedding), tf.transpose(tokens))
    xp = tf.einsum("tbe,ef->tbf", x, net.w_x)
    w_nodes = tf.gather(tf.convert_to_tensor(net.w_nodes), net.wpl_rows(arch))
    return enas_cell_sequence_inference(xp, state, net.w_h, w_nodes, tf.constant(arch),
                                        cfg.num_nodes, max_norm=cfg.hidden_max_norm,
                                        path_mask=path_mask)[0]


@pytest.mark.parametrize("init", ["unit", "uniform"])
def test_output_batch_norm_uses_batch_statistics_in_training_and_evaluation(init):
    """logits = BN(cell output) Eᵀ + b, BN over the batch rows per step with the batch's own
    statistics whether training or not (dropouts off); the carried state is not normalised;
    γ and β receive gradients."""
    cfg = _no_dropout(output_batch_norm=True, batch_norm_init=init, init_range=0.3)
    net, plain = RNNSupernet(cfg, seed=4), RNNSupernet(_no_dropout(init_range=0.3), seed=4)
    rng = np.random.default_rng(2)
    tokens = tf.constant(rng.integers(0, V, (5, 4)), tf.int32)
    state = tf.constant(rng.normal(size=(5, 6)), tf.float32)
    arch = (1, 0, 2, 1, 3, 0, 0)
    out = _cell_outputs(net, tokens, arch, state).numpy()
    gamma, beta = net.bn_gamma.numpy(), net.bn_beta.numpy()
    if init == "unit":
        assert np.all(gamma == 1) and np.all(beta == 0)
    normed = gamma * (out - out.mean(1, keepdims=True)) / np.sqrt(out.var(1, keepdims=True)
                                                                  + 1e-5) + beta
    want = np.einsum("tbh,vh->btv", normed, net.embedding.numpy()) + net.decoder_bias.numpy()
    for training in (True, False):
        with tf.GradientTape() as tape:
            logits, new_state = net(tokens, tf.constant(arch), state, training=training)
            loss = tf.reduce_sum(tf.sin(logits))
        np.testing.assert_allclose(logits.numpy(), want, rtol=1e-4, atol=1e-5)
        _, plain_state = plain(tokens, tf.constant(arch), state, training=training)
        np.testing.assert_allclose(new_state.numpy(), plain_state.numpy(), rtol=1e-6)
        grads = tape.gradient(loss, [net.bn_gamma, net.bn_beta])
        assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    # Evaluation depends on the batch: a row's logits move when another row changes.
    other = tf.concat([tokens[:1], (tokens[1:] + 1) % V], axis=0)
    moved, _ = net(other, tf.constant(arch), state, training=False)
    assert np.abs(moved.numpy()[0] - want[0]).max() > 1e-4


@pytest.mark.parametrize("scope", ["recurrent", "all"])
def test_weight_drop_scope(scope):
    """"recurrent": only W_h is masked (the node matrices enter untouched); "all": W_h and the
    architecture's node matrices. Checked against a supernet without weight-drop whose
    weights are set to the masked ones."""
    cfg = _no_dropout(weight_drop=0.5, weight_drop_scope=scope)
    net, bare = RNNSupernet(cfg, seed=6), RNNSupernet(_no_dropout(), seed=6)
    arch = (1, 0, 2, 1, 3, 0, 0)
    tokens = tf.constant(np.arange(12).reshape(3, 4) % V, tf.int32)
    masks = net.dropout_masks(3)
    assert set(masks) == ({"w_h"} if scope == "recurrent" else {"w_h", "w_nodes"})
    assert set(np.unique(masks["w_h"].numpy())) == {0.0, 2.0}
    got, _ = net(tokens, tf.constant(arch), training=True, dropout_masks=masks)
    bare.w_h.assign(net.w_h.numpy() * masks["w_h"].numpy())
    if scope == "all":
        rows = net.wpl_rows(arch).numpy()
        w_nodes = net.w_nodes.numpy()
        w_nodes[rows] *= masks["w_nodes"].numpy()
        bare.w_nodes.assign(w_nodes)
    want, _ = bare(tokens, tf.constant(arch), training=False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    if scope == "all":  # the node masks matter: W_h's mask alone gives other logits
        bare.w_nodes.assign(net.w_nodes)
        alone, _ = bare(tokens, tf.constant(arch), training=False)
        assert np.abs(alone.numpy() - got.numpy()).max() > 1e-5


def test_path_masks_drop_the_expected_fraction_for_the_whole_batch():
    keep = 0.7
    net = RNNSupernet(_no_dropout(path_keep=keep), seed=0)
    draws = np.stack([net.dropout_masks(3)["path"].numpy() for _ in range(1500)])
    assert draws.shape == (1500, 3)  # one scale per node 1..N-1, shared by every row
    assert set(np.unique(draws)) == {0.0, np.float32(1.0 / keep)}
    dropped = float((draws == 0).mean())
    assert abs(dropped - (1 - keep)) < 0.03, dropped  # 4500 draws: sd ≈ 0.007
    assert abs(float(draws.mean()) - 1.0) < 0.05  # inverted: E[m] = 1
    assert "path" not in ROW_MASKS
    assert "path" not in RNNSupernet(_no_dropout(path_keep=1.0), seed=0).dropout_masks(3)


def test_path_dropping_matches_the_reference_with_gradients():
    """Node i reads m_i · s_in(i): values and every weight's gradient equal the unrolled
    reference with the same masks; at evaluation no path is dropped."""
    cfg = _no_dropout(path_keep=0.5, init_range=0.3)
    net = RNNSupernet(cfg, seed=1)
    rng = np.random.default_rng(5)
    tokens = tf.constant(rng.integers(0, V, (3, 5)), tf.int32)
    state = tf.constant(rng.normal(size=(3, 6)), tf.float32)
    variables = [net.embedding, net.w_x, net.w_h, net.w_nodes, net.decoder_bias]
    for arch, mask in [((1, 0, 0, 0, 3, 1, 2), [2.0, 0.0, 2.0]),
                       ((3, 0, 2, 1, 1, 2, 0), [0.0, 2.0, 2.0])]:
        masks = {"path": tf.constant(mask)}
        with tf.GradientTape(persistent=True) as tape:
            logits, new_state = net(tokens, tf.constant(arch), state, training=True,
                                    dropout_masks=masks)
            ref, ref_state = reference_logits(net, tokens, arch, state, path=mask)
            loss = tf.reduce_sum(tf.sin(logits)) + tf.reduce_sum(new_state**2)
            ref_loss = tf.reduce_sum(tf.sin(ref)) + tf.reduce_sum(ref_state**2)
        np.testing.assert_allclose(logits, ref, atol=1e-5)
        np.testing.assert_allclose(new_state, ref_state, atol=1e-5)
        for g, r in zip(tape.gradient(loss, variables), tape.gradient(ref_loss, variables)):
            np.testing.assert_allclose(tf.convert_to_tensor(g), tf.convert_to_tensor(r),
                                       atol=1e-4)
        unmasked, _ = reference_logits(net, tokens, arch, state)
        assert np.abs(unmasked.numpy() - logits.numpy()).max() > 1e-4  # the mask acted
        evaluated, _ = net(tokens, tf.constant(arch), state, training=False)
        np.testing.assert_allclose(evaluated, unmasked, atol=1e-5)


def test_one_trace_with_batch_norm_and_path_dropping():
    """Every option on (BN, recurrent weight-drop, path dropping, all dropouts): one trace
    of each step for every architecture; WPL scope "all" covers γ and β."""
    cfg = tiny_config(output_batch_norm=True, weight_drop_scope="recurrent", path_keep=0.8,
                      wpl_scope="all")
    task = RNNSearchTask(tiny_corpus(), cfg, seed=0)
    task.wpl_state.strength.assign(60.0)
    net = task.supernet
    assert list(task.wpl_state.protected_variables) == [net.w_nodes] + net.dense_weights()
    rng = np.random.default_rng(8)
    gamma = net.bn_gamma.numpy()
    for k in range(4):
        out = task.train_architecture(task.space.sample(rng), 2, wpl_active=k > 0)
        assert np.isfinite(out["loss"])
        task.validation_error(task.space.sample(rng))
        task.reward(task.space.sample(rng))
    assert task.trace_count == 1 and task.eval_trace_count == 1
    assert not np.array_equal(net.bn_gamma.numpy(), gamma)  # trained
    assert float(tf.reduce_max(task.wpl_state.fisher[-1])) > 0  # β's Fisher


@pytest.mark.parametrize("max_norm", [25.0, 0.3])
def test_last_node_state_matches_the_reference_with_gradients(max_norm):
    """recurrent_state="last_node": the output is the loose-end mean (unclamped), the carried
    state the last node (clamped, the scale a constant for gradients); values and every
    weight's gradient equal the unrolled reference, and differ from the loose-end mean's."""
    cfg = _no_dropout(recurrent_state="last_node", hidden_max_norm=max_norm, init_range=0.5)
    net = RNNSupernet(cfg, seed=3)
    mean_net = RNNSupernet(_no_dropout(hidden_max_norm=max_norm, init_range=0.5), seed=3)
    rng = np.random.default_rng(6)
    tokens = tf.constant(rng.integers(0, V, (3, 6)), tf.int32)
    state = tf.constant(rng.normal(size=(3, 6)), tf.float32)
    for arch in [(1, 0, 0, 0, 3, 1, 2), (2, 0, 1, 0, 1, 1, 3)]:
        ours, reference, _ = _run_against_reference(net, tokens, arch, state,
                                                     max_norm=max_norm, last_node=True)
        _assert_matches(ours, reference)
        assert np.all(tf.norm(ours[1], axis=-1).numpy() <= max_norm * (1 + 1e-5))
        if max_norm < 1:  # the clamp acted: the unclamped cell gives other logits
            free = RNNSupernet(_no_dropout(recurrent_state="last_node", init_range=0.5), seed=3)
            unclamped, _ = free(tokens, tf.constant(arch), state)
            assert np.abs(unclamped.numpy() - ours[0].numpy()).max() > 1e-4
        other, _ = mean_net(tokens, tf.constant(arch), state)
        assert np.abs(other.numpy() - ours[0].numpy()).max() > 1e-4


# ------------------------------------------------------------ Fisher from validation batches
def _valid_task(fisher_source="valid", scope="cell", dropout=True, mode="proximal", **kw):
    """A tiny task whose Fisher comes from ``fisher_source``; the validation split has
    ``(60 − 1) // 15 = 3`` windows of ``eval_bptt = 15`` (window 0 the fixed batch)."""
    wpl = WPLConfig(fisher_momentum=0.25, clip_norm=5e-4, fisher_source=fisher_source,
                    mode=mode)
    make = tiny_config if dropout else _no_dropout
    return RNNSearchTask(tiny_corpus(), make(wpl_scope=scope, wpl=wpl, eval_bptt=15, **kw),
                         seed=0)


def _validation_gradients(task, arch, position, state, masks):
    """Independently of the task: ``(∂CE/∂θ of every covered weight, new state)`` of ``arch``
    on window ``position`` of the validation split batchified at ``eval_batch_size`` rows,
    from ``state``, with ``masks`` (None: no dropout); every weight as it is now."""
    cfg = task.cfg
    valid = batchify(tiny_corpus().valid, cfg.eval_batch_size)
    x, y = bptt_window(valid, position, cfg.eval_bptt)
    with tf.GradientTape() as tape:
        logits, new_state = task.supernet(tf.constant(x), tf.constant(arch), tf.constant(state),
                                          training=masks is not None, dropout_masks=masks)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y, tf.int32), logits))
    grads = tape.gradient(loss, list(task.wpl_state.protected_variables))
    return [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads], new_state.numpy()


def _copied_generator(generator):
    copy = keras.random.SeedGenerator(seed=0)
    copy.state.assign(generator.state.value)
    return copy


@pytest.mark.parametrize("scope, dropout", [("cell", False), ("all", True), ("cell", True)])
@pytest.mark.slow
def test_valid_fisher_is_the_ema_of_the_validation_gradient(scope, dropout):
    """fisher_source="valid": after an architecture's training steps (WPL on), one pass on
    the next validation window (1, then 2, past the fixed window 0) from the Fisher's own
    carried state, with the training dropouts from the task's Fisher generator, gives
    ``F ← clip((1 − η) F + η g²)`` for every covered weight (node rows as one block, a dense
    weight as a whole); not the training gradient's (the same run with "train" differs)."""
    eta, clip, f0 = 0.25, 5e-4, 1e-4
    task = _valid_task(scope=scope, dropout=dropout)
    state, model = task.wpl_state, task.cfg.model
    carried = np.random.default_rng(2).normal(size=task.fisher_state.shape).astype(np.float32)
    task.fisher_state.assign(carried)
    node_shape = [model.num_nodes - 1, model.hidden_size, 2 * model.hidden_size]
    archs = [(1, 0, 2, 1, 3, 0, 0), (0, 0, 1, 1, 2, 2, 3), (3, 0, 0, 1, 0, 2, 1)]
    for position, arch in zip([1, 2, 1], archs):
        assert int(task.fisher_position.numpy()) == position
        generator = _copied_generator(task.fisher_seed_generator)
        for f in state.fisher:
            f.assign(tf.fill(f.shape, f0))
        task.train_architecture(arch, 2, wpl_active=True)
        masks = draw_dropout_masks(task.cfg.eval_batch_size, model, generator,
                                   node_shape=node_shape) if dropout else None
        assert dropout == bool(masks)
        grads, new_state = _validation_gradients(task, arch, position, carried, masks)
        rows = task.supernet.wpl_rows(arch).numpy()

        def expected(g):
            new = (1 - eta) * f0 + eta * g**2
            return new * min(1.0, clip / np.linalg.norm(new))

        np.testing.assert_allclose(state.fisher[0].numpy()[rows], expected(grads[0][rows]),
                                   rtol=1e-5, atol=1e-12)
        others = np.setdiff1d(np.arange(task.space.num_pairs), rows)
        assert np.all(state.fisher[0].numpy()[others] == np.float32(f0))
        assert len(state.fisher) == (1 if scope == "cell" else 5)
        for k in range(1, len(state.fisher)):
            np.testing.assert_allclose(state.fisher[k].numpy(), expected(grads[k]), rtol=1e-5,
                                       atol=1e-12)
        norms = np.linalg.norm(new_state, axis=1, keepdims=True)
        carried = new_state * np.minimum(1.0, model.hidden_max_norm / norms)
        np.testing.assert_allclose(task.fisher_state.numpy(), carried, rtol=1e-5, atol=1e-7)
    assert int(state.num_fisher_updates.numpy()) == 3
    # The same steps with the training gradient's Fisher: another Fisher, the same weights.
    other = _valid_task("train", scope=scope, dropout=dropout)
    other.fisher_state.assign(task.fisher_state)  # unused by "train"
    for arch in archs:
        for f in other.wpl_state.fisher:
            f.assign(tf.fill(f.shape, f0))
        other.train_architecture(arch, 2, wpl_active=True)
    for ours, theirs in zip(task.supernet.weights, other.supernet.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert np.abs(state.fisher[0].numpy() - other.wpl_state.fisher[0].numpy()).max() > 1e-7


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
@pytest.mark.slow
def test_fisher_source_changes_nothing_in_the_training_steps_but_the_fisher(mode):
    """With α = 0 (WPL on, so the Fisher updates, the anchors move and the penalty is 0), every
    dropout on and 4 architectures x 2 batches: the losses, gradient norms, weights, optimizer,
    training position and state, supernet seed state, err1 and rewards are identical with
    "train" and "valid" (the validation pass draws its masks from its own generator, takes no
    step, and leaves the reward's position and state alone); the Fishers differ."""
    tasks = [_valid_task(source, scope="all", mode=mode)
             for source in ("train", "valid")]
    rng = np.random.default_rng(4)
    archs = [tasks[0].space.sample(rng) for _ in range(4)]
    records = []
    for task in tasks:
        task.start_epoch(0)
        outs = [task.train_architecture(a, 2, wpl_active=k > 0) for k, a in enumerate(archs)]
        outs += [{"err1": task.validation_error(a), "reward": task.reward(a)} for a in archs]
        variables = (task.supernet.variables + task.optimizer.variables
                     + [task.train_state, task.train_position, task.valid_position,
                        task.reward_state])
        records.append((outs, [np.asarray(v) for v in variables]))
    (outs_train, vars_train), (outs_valid, vars_valid) = records
    assert outs_train == outs_valid
    for a, b in zip(vars_train, vars_valid):
        np.testing.assert_array_equal(a, b)
    for f_train, f_valid in zip(tasks[0].wpl_state.fisher, tasks[1].wpl_state.fisher):
        assert np.abs(f_train.numpy() - f_valid.numpy()).max() > 0
    assert int(tasks[0].fisher_position.numpy()) == 1  # "train" never reads it
    assert int(tasks[1].fisher_position.numpy()) == 2  # 3 WPL architectures: 1 -> 2 -> 1 -> 2
    assert (tasks[0].fisher_trace_count, tasks[1].fisher_trace_count) == (0, 1)


def test_valid_fisher_position_and_state_are_checkpointed_and_reset_by_epoch(tmp_path):
    """The Fisher window position, carried state and mask generator travel in a checkpoint:
    a restored task continues with the same Fisher; WPL off moves nothing; start_epoch
    zeroes the carried state (not the position); one trace serves every architecture."""
    task = _valid_task()
    rng = np.random.default_rng(5)
    archs = [task.space.sample(rng) for _ in range(6)]
    task.train_architecture(archs[0], 1, wpl_active=False)
    assert int(task.fisher_position.numpy()) == 1 and not task.fisher_state.numpy().any()
    task.train_architecture(archs[1], 1, wpl_active=True)
    assert int(task.fisher_position.numpy()) == 2 and task.fisher_state.numpy().any()
    path = tf.train.Checkpoint(**task.checkpoint_items()).save(str(tmp_path / "ckpt"))
    other = _valid_task()
    tf.train.Checkpoint(**other.checkpoint_items()).restore(path).assert_consumed()
    assert int(other.fisher_position.numpy()) == 2
    np.testing.assert_array_equal(other.fisher_state.numpy(), task.fisher_state.numpy())
    np.testing.assert_array_equal(other.fisher_seed_generator.state.numpy(),
                                  task.fisher_seed_generator.state.numpy())
    for arch in archs[2:]:
        for t in (task, other):
            t.train_architecture(arch, 1, wpl_active=True)
        np.testing.assert_array_equal(other.wpl_state.fisher[0].numpy(),
                                      task.wpl_state.fisher[0].numpy())
    assert int(task.fisher_position.numpy()) == 2  # 2, 1, 2, 1, 2: windows 1 and 2 only
    assert (task.trace_count, task.fisher_trace_count) == (1, 1)
    task.start_epoch(1)
    assert not task.fisher_state.numpy().any() and int(task.fisher_position.numpy()) == 2


@pytest.mark.slow
def test_one_trace_and_one_xla_compilation_with_the_valid_fisher_under_jit():
    """jit_compile: the training step and the validation pass (its own XLA-compiled step) are
    traced once and compiled once for every architecture and data window. A compilation
    takes seconds here and a step of this tiny task milliseconds, so every step after the
    first (the first compiles both) takes a small fraction of the first one's time; when a
    window's position was a compile-time constant of the step (a slice begun at it), each
    step compiled again and took as long as the first."""
    task = _valid_task(jit_compile=True)
    rng = np.random.default_rng(6)
    seconds = []
    for k in range(4):
        start = time.perf_counter()
        task.train_architecture(task.space.sample(rng), 2, wpl_active=True)
        seconds.append(time.perf_counter() - start)
    assert (task.trace_count, task.fisher_trace_count) == (1, 1)
    assert max(seconds[1:]) < 0.2 * seconds[0], seconds
    assert int(task.train_position.numpy()) == 8 % task._num_train_windows
    assert float(tf.reduce_max(task.wpl_state.fisher[0])) > 0

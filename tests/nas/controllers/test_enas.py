"""Tests for the ENAS LSTM controller."""

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.controllers.enas import Controller

SIZES = (3, 4, 2, 5)


def _manual_log_prob(controller, arch):
    """Recomputes log π(arch) and H from the raw heads, step by step, in NumPy."""
    state = [tf.zeros([1, controller.units]), tf.zeros([1, controller.units])]
    x = tf.convert_to_tensor(controller.start)
    log_prob, entropy = 0.0, 0.0
    for k, a in enumerate(arch):
        h, state = controller.cell(x, state)
        z = controller.heads[k](h).numpy()[0] / controller.temperature
        z = controller.tanh_constant * np.tanh(z)
        p = np.exp(z - z.max())
        p /= p.sum()
        log_prob += np.log(p[a])
        entropy += -(p * np.log(p)).sum()
        if k < len(arch) - 1:
            x = controller.embeddings[k](tf.constant([a]))
    return log_prob, entropy


def test_log_prob_matches_manual_computation(seed):
    controller = Controller(SIZES, units=8, temperature=0.5, tanh_constant=2.5, seed=3)
    arch = (2, 0, 1, 4)
    log_prob, entropy = controller.log_prob_and_entropy(arch)
    want_lp, want_h = _manual_log_prob(controller, arch)
    np.testing.assert_allclose(float(log_prob), want_lp, rtol=1e-5)
    np.testing.assert_allclose(float(entropy), want_h, rtol=1e-5)
    probs = controller.decision_probabilities(arch)
    assert [len(p) for p in probs] == list(SIZES)
    np.testing.assert_allclose(
        sum(np.log(p[a]) for p, a in zip(probs, arch)), want_lp, rtol=1e-5
    )


@pytest.mark.parametrize("arch", [(2, 0, 1, 4), (0, 3, 0, 0), (1, 1, 1, 2)])
def test_per_decision_scores_match_probabilities_and_sum_to_totals(seed, arch):
    """``_decision_log_probs_and_entropies`` (REINFORCE's reward modes): decision ``k``'s
    ``log p_k[a_k]`` and ``−Σ p_k log p_k`` from the decision probabilities, summing to
    ``log_prob_and_entropy``; the log-probabilities carry a gradient to every head."""
    controller = Controller(SIZES, units=8, temperature=0.5, tanh_constant=2.5, seed=3)
    for v in controller.trainable_variables:
        v.assign(10.0 * v)  # far from uniform: log p_k[a_k] depends on a_k
    probs = controller.decision_probabilities(arch)
    assert all(np.ptp(p) > 0.1 for p in probs)
    with tf.GradientTape() as tape:
        log_probs, entropies = controller._decision_log_probs_and_entropies(
            tf.constant(arch, tf.int32))
        picked = tf.reduce_sum(log_probs)
    assert log_probs.shape == entropies.shape == (len(SIZES),)
    want_lp = [np.log(p[a]) for p, a in zip(probs, arch)]
    want_h = [-(p * np.log(p)).sum() for p in probs]
    np.testing.assert_allclose(log_probs.numpy(), want_lp, rtol=1e-5)
    np.testing.assert_allclose(entropies.numpy(), want_h, rtol=1e-5)
    assert len(set(np.round(want_h, 4))) > 1  # the decisions differ: a real per-step check
    total_lp, total_h = controller.log_prob_and_entropy(arch)
    np.testing.assert_allclose(log_probs.numpy().sum(), float(total_lp), rtol=1e-5)
    np.testing.assert_allclose(entropies.numpy().sum(), float(total_h), rtol=1e-5)
    grads = tape.gradient(picked, [h.kernel for h in controller.heads])
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_sample_is_valid_and_traced_once(seed):
    controller = Controller(SIZES, units=8, seed=0)
    seen = set()
    for _ in range(30):
        arch, log_prob, entropy = controller.sample()
        arch = tuple(int(a) for a in arch.numpy())
        assert all(0 <= a < s for a, s in zip(arch, SIZES))
        np.testing.assert_allclose(
            float(log_prob), float(controller.log_prob_and_entropy(arch)[0]), rtol=1e-5
        )
        assert float(entropy) > 0
        seen.add(arch)
    assert len(seen) > 5  # near-uniform at init: many different architectures
    assert controller.tracing_counts == {"sample": 1, "log_prob_and_entropy": 1}


def test_log_prob_is_differentiable(seed):
    controller = Controller(SIZES, units=8, seed=0)
    arch = tf.constant([1, 2, 0, 3], tf.int32)
    for fn in (controller, controller.log_prob_and_entropy):  # eager call and traced function
        with tf.GradientTape() as tape:
            log_prob, entropy = fn(arch)
            total = log_prob + entropy
        grads = tape.gradient(total, controller.trainable_variables)
        assert all(g is not None for g in grads)
        assert any(float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0 for g in grads)


def test_checkpoint_round_trip_restores_sampling(tmp_path, seed):
    controller = Controller(SIZES, units=8, seed=5)
    controller.sample_architecture()
    path = tf.train.Checkpoint(controller=controller).save(str(tmp_path / "ckpt"))
    first = [controller.sample_architecture() for _ in range(6)]
    other = Controller(SIZES, units=8, seed=99)
    tf.train.Checkpoint(controller=other).restore(path).assert_existing_objects_matched()
    assert [other.sample_architecture() for _ in range(6)] == first
    for a, b in zip(controller.trainable_variables, other.trainable_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    arch = first[0]
    np.testing.assert_allclose(
        float(other.log_prob_and_entropy(arch)[0]),
        float(controller.log_prob_and_entropy(arch)[0]),
        rtol=1e-6,
    )


def test_same_seed_same_samples_different_seed_differs():
    a = Controller(SIZES, units=8, seed=11)
    b = Controller(SIZES, units=8, seed=11)
    c = Controller(SIZES, units=8, seed=12)
    sa = [a.sample_architecture() for _ in range(8)]
    assert sa == [b.sample_architecture() for _ in range(8)]
    assert sa != [c.sample_architecture() for _ in range(8)]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least one decision"):
        Controller([])
    with pytest.raises(ValueError, match="temperature"):
        Controller([2], temperature=0.0)
    controller = Controller([2, 3], units=4)
    with pytest.raises(ValueError, match="expects 2"):
        controller.log_prob_and_entropy([0, 1, 1])
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        controller.log_prob_and_entropy([0, 3])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"decision_sizes": [2, 2.7]}, r"decision_sizes\[1\]"),
        ({"decision_sizes": [2, True]}, r"decision_sizes\[1\]"),
        ({"decision_sizes": [2, "3"]}, r"decision_sizes\[1\]"),
        ({"decision_sizes": [2, 0]}, r"decision_sizes\[1\]"),
        ({"decision_sizes": "23"}, "decision_sizes"),
        ({"decision_sizes": [2], "units": 1.5}, "units"),
        ({"decision_sizes": [2], "units": 0}, "units"),
        ({"decision_sizes": [2], "temperature": float("nan")}, "temperature"),
        ({"decision_sizes": [2], "temperature": float("inf")}, "temperature"),
        ({"decision_sizes": [2], "tanh_constant": -1.0}, "tanh_constant"),
        ({"decision_sizes": [2], "tanh_constant": np.float32(-1.0)}, "tanh_constant"),
        ({"decision_sizes": [2], "seed": -1}, "seed"),
    ],
)
def test_malformed_sizes_and_options_name_the_field(kwargs, field):
    sizes = kwargs.pop("decision_sizes")
    with pytest.raises(ValueError, match=field):
        Controller(sizes, **kwargs)


@pytest.mark.parametrize("field, value", [
    ("tanh_constant", "2.5"), ("temperature", True), ("temperature", np.array([1.0, 2.0])),
    ("seed", 1.5), ("seed", None),
])
def test_non_number_options_are_type_errors_naming_the_field(field, value):
    with pytest.raises(TypeError, match=f"Controller {field} must be"):
        Controller([2], **{field: value})


def test_numpy_integer_sizes_are_accepted():
    controller = Controller(np.array([2, 3], dtype=np.int64), units=np.int32(4))
    assert controller.decision_sizes == (2, 3) and controller.units == 4


def test_masked_log_prob_sums_active_decisions_only_and_traces_once(seed):
    """``log_prob_and_entropy(arch, mask) = (Σ_k m_k ℓ_k, Σ_k m_k H_k)``; one trace for every
    architecture and mask; all ones equals the unmasked sums."""
    controller = Controller(SIZES, units=8, temperature=0.5, tanh_constant=2.5, seed=3)
    for arch, mask in [((2, 0, 1, 4), (1, 0, 1, 1)), ((0, 3, 0, 0), (0, 1, 0, 1)),
                       ((1, 1, 1, 2), (1, 1, 1, 1))]:
        log_probs, entropies = controller._decision_log_probs_and_entropies(
            tf.constant(arch, tf.int32))
        m = np.array(mask, np.float32)
        log_prob, entropy = controller.log_prob_and_entropy(arch, mask=mask)
        np.testing.assert_allclose(float(log_prob), (m * log_probs.numpy()).sum(), rtol=1e-5)
        np.testing.assert_allclose(float(entropy), (m * entropies.numpy()).sum(), rtol=1e-5)
    full = controller.log_prob_and_entropy((1, 1, 1, 2))
    np.testing.assert_allclose([float(log_prob), float(entropy)], [float(v) for v in full],
                               rtol=1e-5)
    assert controller.masked_tracing_count == 1
    with pytest.raises(ValueError, match="mask has 3 values"):
        controller.log_prob_and_entropy((0, 0, 0, 0), mask=(1, 1, 1))
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 1\]"):
        controller.log_prob_and_entropy((0, 0, 0, 0), mask=(1, 2, 1, 1))


def test_grown_controller_keeps_every_weight_and_the_old_distributions(seed):
    controller = Controller(SIZES, units=8, temperature=0.5, tanh_constant=2.5, seed=3)
    for v in controller.trainable_variables:
        v.assign(3.0 * v)  # trained-looking weights, not the initial ones
    controller.sample_architecture()  # move the sampler
    grown = controller.grown(SIZES + (6, 2))
    assert grown.decision_sizes == SIZES + (6, 2) and grown.units == controller.units
    pairs = [(controller.cell, grown.cell)] + list(zip(controller.heads, grown.heads))
    pairs += list(zip(controller.embeddings, grown.embeddings))
    assert len(pairs) == 1 + 4 + 3
    for layer_old, layer_new in pairs:
        assert len(layer_old.weights) == len(layer_new.weights) > 0
        for a, b in zip(layer_old.weights, layer_new.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(controller.start.numpy(), grown.start.numpy())
    np.testing.assert_array_equal(controller.generator.state.numpy(),
                                  grown.generator.state.numpy())
    assert len(grown.heads) == 6 and len(grown.embeddings) == 5
    arch = (2, 0, 1, 4)
    for p_old, p_new in zip(controller.decision_probabilities(arch),
                            grown.decision_probabilities(arch + (0, 0))[:4]):
        np.testing.assert_array_equal(p_old, p_new)
    with pytest.raises(ValueError, match="must start with the current sizes"):
        controller.grown((3, 4, 3, 5, 2))

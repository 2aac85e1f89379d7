import json
import os

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data.ptb import PTBCorpus
from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.spaces.rnn.model import (
    build_language_model,
    evaluate_perplexity,
    export_language_model,
    train_from_scratch,
)
from wpl_keras.nas.spaces.rnn.cell import enas_cell_sequence_inference
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNOptimizerConfig
from wpl_keras.experiments.presets import cpu_small_rnn_task

V = 20
ARCH = (1, 0, 0, 0, 3, 1, 2)


def tiny_config(model=None, optimizer=None):
    """cpu_small with tiny sizes and lr 2; ``model`` / ``optimizer``: fields of the nested
    configs to change."""
    sizes = dict(num_nodes=4, vocab_size=V, embedding_size=8, hidden_size=8)
    return cpu_small_rnn_task(
        model=RNNModelConfig(**{**sizes, **(model or {})}),
        optimizer=RNNOptimizerConfig(**{"learning_rate": 2.0, **(optimizer or {})}),
        batch_size=4, bptt=5, eval_batch_size=2, eval_bptt=5)


def test_build_checks_architecture_and_shapes(seed):
    space = RNNCellSpace(4)
    model = build_language_model(space, ARCH, tiny_config())
    logits, state = model(tf.zeros([3, 6], tf.int32))
    assert logits.shape == (3, 6, V) and state.shape == (3, 8)
    assert model.w_nodes.shape == (3, 8, 16)  # only the cell's node matrices
    with pytest.raises(InvalidArchitectureError):
        build_language_model(space, (0, 1, 0, 0, 0, 0, 0), tiny_config())


RELEASE_OPTIONS = dict(output_batch_norm=True, batch_norm_init="unit",
                       weight_drop_scope="recurrent", recurrent_state="last_node",
                       path_keep=0.9)


@pytest.mark.parametrize("options", [{}, RELEASE_OPTIONS], ids=["plain", "bn_path"])
def test_train_from_scratch_learns_a_pattern(seed, options):
    # A deterministic cyclic text is learnable: perplexity must fall far below V (also with
    # output BatchNorm, evaluated on its moving averages, and path dropping in training).
    # 41 cycles: the batch rows start at different words (identical rows would leave
    # BatchNorm no variance to normalise).
    ids = np.tile(np.arange(V, dtype=np.int32), 41)
    corpus = PTBCorpus(ids, ids[:200], ids[:200], [str(i) for i in range(V)], {})
    cfg = tiny_config(model=dict(weight_drop=0.0, output_dropout=0.0, input_dropout=0.0,
                                 embedding_dropout=0.0, hidden_size=16, embedding_size=16,
                                 init_range=0.3, **options),
                      optimizer=dict(learning_rate=2.0, grad_clip=1.0))
    out = train_from_scratch(corpus, ARCH, cfg, epochs=2, max_eval_batches=5)
    assert set(out) >= {"valid_ppl", "test_ppl"}
    assert out["valid_ppl"] < V / 2, out
    assert np.isfinite(out["test_ppl"])


@pytest.mark.parametrize("options", [{}, RELEASE_OPTIONS], ids=["plain", "bn_path"])
def test_saved_model_round_trip(seed, tmp_path, options):
    space = RNNCellSpace(4)
    model = build_language_model(space, ARCH, tiny_config(model=options), seed=3)
    # A model that already ran traced (custom-gradient) functions must still export.
    evaluate_perplexity(model, np.arange(40) % V, batch_size=2, bptt=5)
    tokens = tf.constant(np.arange(12).reshape(2, 6) % V, tf.int32)
    expected = tf.nn.log_softmax(model(tokens)[0], axis=-1)
    export_dir = export_language_model(model, ARCH, space, str(tmp_path / "lm"))
    loaded = tf.saved_model.load(export_dir)
    got = loaded.signatures["serving_default"](tokens=tokens)["log_probs"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-5)
    with open(os.path.join(export_dir, "cell.json")) as f:
        cell = json.load(f)
    assert space.from_json(cell) == ARCH and cell["config"]["model"]["hidden_size"] == 8
    with pytest.raises(ValueError, match="not the model's cell"):
        export_language_model(model, (0,) * 7, space, str(tmp_path / "other"))


def test_evaluate_perplexity_needs_a_window(seed):
    model = build_language_model(RNNCellSpace(4), ARCH, tiny_config())
    ppl = evaluate_perplexity(model, np.arange(40) % V, batch_size=2, bptt=5)
    assert 1.0 < ppl < 10 * V
    with pytest.raises(ValueError):
        evaluate_perplexity(model, np.arange(8) % V, batch_size=2, bptt=5)


VOCAB = ["<unk>", "<eos>"] + [f"word{i}" for i in range(V - 2)]

_FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
words = tf.constant(json.loads(sys.argv[2]))
ids = loaded.signatures["serving_default"](tokens=tf.constant(json.loads(sys.argv[3]), tf.int32))
by_words = loaded.signatures["serve_words"](words=words)
assert not any(name.startswith("wpl_keras") for name in sys.modules)
print(json.dumps({"ids": by_words["ids"].numpy().tolist(),
                  "diff": float(np.abs(ids["log_probs"] - by_words["log_probs"]).max()),
                  "log_probs": by_words["log_probs"].numpy().tolist()}))
"""


@pytest.mark.slow
def test_export_ships_vocabulary_and_a_words_signature(seed, tmp_path):
    import subprocess
    import sys

    space = RNNCellSpace(4)
    model = build_language_model(space, ARCH, tiny_config(), seed=3)
    evaluate_perplexity(model, np.arange(40) % V, batch_size=2, bptt=5)
    export_dir = export_language_model(model, ARCH, space, str(tmp_path / "lm"), vocab=VOCAB)
    with open(os.path.join(export_dir, "assets", "vocab.txt")) as f:
        assert f.read().splitlines() == VOCAB
    sentence = [["word3", "word0", "zebra", "<eos>", "word17", "word3"],
                ["<unk>", "word5", "word5", "Word5", "", "word1"]]
    expected_ids = [[5, 2, 0, 1, 19, 5], [0, 7, 7, 0, 0, 3]]  # unknown words -> <unk> (0)
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == {"serving_default", "serve_words"}
    by_words = loaded.signatures["serve_words"](words=tf.constant(sentence))
    np.testing.assert_array_equal(by_words["ids"], expected_ids)
    by_ids = loaded.signatures["serving_default"](tokens=tf.constant(expected_ids, tf.int32))
    np.testing.assert_allclose(by_words["log_probs"], by_ids["log_probs"], atol=0)
    direct = tf.nn.log_softmax(model(tf.constant(expected_ids, tf.int32))[0], axis=-1)
    np.testing.assert_allclose(by_words["log_probs"], direct, atol=1e-6)
    # The export works in a process that has never imported wpl_keras.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, export_dir, json.dumps(sentence),
         json.dumps(expected_ids)],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    fresh = json.loads(run.stdout.strip().splitlines()[-1])
    assert fresh["ids"] == expected_ids and fresh["diff"] == 0.0
    np.testing.assert_allclose(fresh["log_probs"], direct, atol=1e-6)


@pytest.mark.parametrize("vocab, match", [
    (VOCAB[:-1], "has 19 words but the model's vocab_size is 20"),
    (VOCAB[:-1] + ["word0"], "repeats words"),
    (VOCAB[:-1] + ["two words"], "without whitespace"),
    (VOCAB[:-1] + ["tab\tword"], "without whitespace"),
    (VOCAB[:-1] + [""], "non-empty"),
    (["<eos>"] + VOCAB[2:] + ["UNK"], "no unknown-word token '<unk>'"),
])
def test_export_vocabulary_is_checked(seed, tmp_path, vocab, match):
    space = RNNCellSpace(4)
    model = build_language_model(space, ARCH, tiny_config())
    with pytest.raises(ValueError, match=match):
        export_language_model(model, ARCH, space, str(tmp_path / "lm"), vocab=vocab)
    assert not os.path.exists(tmp_path / "lm")


def test_export_with_another_unknown_token(seed, tmp_path):
    space = RNNCellSpace(4)
    model = build_language_model(space, ARCH, tiny_config())
    vocab = ["<eos>"] + VOCAB[2:] + ["UNK"]
    export_dir = export_language_model(model, ARCH, space, str(tmp_path / "lm"), vocab=vocab,
                                       unk_token="UNK")
    out = tf.saved_model.load(export_dir).signatures["serve_words"](
        words=tf.constant([["<unk>", "word0", "UNK"]]))
    np.testing.assert_array_equal(out["ids"], [[V - 1, 1, V - 1]])


def test_output_batch_norm_trains_on_batch_statistics_and_evaluates_on_moving_averages(seed):
    """Training: each step's outputs normalised over the rows, and the moving averages move
    by m ← 0.9 m + 0.1 μ̄, v ← 0.9 v + 0.1 σ̄² n/(n − 1); evaluation: the averages, so a
    row's logits do not depend on the other rows."""
    cfg = tiny_config(model=dict(weight_drop=0.0, output_dropout=0.0, input_dropout=0.0,
                                 embedding_dropout=0.0, init_range=0.3,
                                 output_batch_norm=True, batch_norm_init="uniform"))
    model = build_language_model(RNNCellSpace(4), ARCH, cfg, seed=2)
    assert [w.name for w in model.non_trainable_weights] == ["bn_moving_mean",
                                                            "bn_moving_variance"]
    rng = np.random.default_rng(3)
    tokens = tf.constant(rng.integers(0, V, (4, 5)), tf.int32)
    x = tf.gather(model.embedding, tf.transpose(tokens))
    xp = tf.einsum("tbe,ef->tbf", x, model.w_x)
    out = enas_cell_sequence_inference(xp, tf.zeros([4, 8]), model.w_h, model.w_nodes,
                                       tf.constant(ARCH), 4, max_norm=25.0)[0].numpy()
    gamma, beta = model.bn_gamma.numpy(), model.bn_beta.numpy()
    emb, bias = model.embedding.numpy(), model.decoder_bias.numpy()

    def logits_of(normed):
        return np.einsum("tbh,vh->btv", normed, emb) + bias

    mean, var = out.mean(1, keepdims=True), out.var(1, keepdims=True)
    train, _ = model(tokens, training=True)
    np.testing.assert_allclose(train.numpy(), logits_of(
        gamma * (out - mean) / np.sqrt(var + 1e-5) + beta), rtol=1e-4, atol=1e-5)
    moving_mean = 0.1 * mean.mean(axis=(0, 1))
    moving_var = 0.9 + 0.1 * var.mean(axis=(0, 1)) * 4 / 3
    np.testing.assert_allclose(model.bn_moving_mean.numpy(), moving_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.bn_moving_variance.numpy(), moving_var, rtol=1e-5)
    evaluated, _ = model(tokens, training=False)
    np.testing.assert_allclose(evaluated.numpy(), logits_of(
        gamma * (out - moving_mean) / np.sqrt(moving_var + 1e-5) + beta), rtol=1e-4, atol=1e-5)
    alone, _ = model(tokens[:1], training=False)
    np.testing.assert_allclose(alone.numpy()[0], evaluated.numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bn_moving_mean.numpy(), moving_mean, rtol=1e-5,
                               atol=1e-7)  # evaluation leaves the averages alone


class _Kill(RuntimeError):
    """Stands for kill -9: nothing is saved when it is raised."""


def _killed_after(run, batches: int, counter: list):
    """Makes ``run`` die right after training batch number ``batches + 1`` (before that
    batch is counted or saved); ``counter`` collects the batches it did count."""
    count = run.batch_done

    def batch_done(loss):
        if len(counter) == batches:
            raise _Kill("simulated kill -9")
        counter.append(loss)
        count(loss)

    run.batch_done = batch_done
    return run


def test_train_from_scratch_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path):
    """Killed in epoch 1 after 4 of its 6 windows (checkpoints every 3 batches: the last one
    after window 3, so window 4 is trained again), then resumed: the perplexities and the
    weights equal the uninterrupted run's. Dropouts, path dropping and the output BatchNorm
    are on, so the dropout generator's state, the hidden state and the moving averages must
    all be restored."""
    from wpl_keras.nas.resumable import ResumableTraining

    ids = np.random.default_rng(0).integers(0, V, 4 * 31).astype(np.int32)  # 6 windows
    corpus = PTBCorpus(ids, ids[:60], ids[:60], [str(i) for i in range(V)], {})
    cfg = tiny_config(model=RELEASE_OPTIONS)
    full = train_from_scratch(corpus, ARCH, cfg, 2, seed=3)
    folder = str(tmp_path / "ckpt")
    done: list = []
    with pytest.raises(_Kill):
        train_from_scratch(corpus, ARCH, cfg, 2, seed=3, checkpoint=_killed_after(
            ResumableTraining(folder, every=3), 10, done))
    again: list = []
    resumed = train_from_scratch(corpus, ARCH, cfg, 2, seed=3, checkpoint=_killed_after(
        ResumableTraining(folder, every=3, resume=True), 99, again))
    assert len(again) == 3  # windows 4-6 of epoch 1: the last save was after its window 3
    for key in ("valid_ppl", "test_ppl", "train_ppl"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6), key
    for a, b in zip(resumed["model"].get_weights(), full["model"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # A folder with a checkpoint is not overwritten by a run that does not resume.
    with pytest.raises(FileExistsError, match="resume"):
        train_from_scratch(corpus, ARCH, cfg, 2, seed=3,
                           checkpoint=ResumableTraining(folder, every=3))

"""A standalone language model with ONE fixed ENAS cell: retraining and SavedModel export.

After a search, the chosen cell is trained from scratch with its own weights (not the
supernet's): embedding ``E [V, H]`` (tied decoder), ``W_x [H, 2H]``, ``W_h [H, 2H]`` and only
the ``N − 1`` node matrices the cell uses, ``[N − 1, H, 2H]``. The cell equations, dropouts
(weight-drop scope and path dropping included), the carried state (loose-end mean or last
node), the optional output BatchNorm and the fast weight gradients are those of
:mod:`wpl_keras.nas.spaces.rnn.supernet` (:func:`~wpl_keras.nas.spaces.rnn.supernet.enas_cell_sequence`). Unlike the supernet, this model
evaluates its output BatchNorm with moving averages (a test perplexity must not depend on
the batch); training uses the batch statistics and updates the averages.

Perplexity is ``exp(mean next-word cross-entropy)`` over a whole split read in BPTT windows
with the hidden state carried across windows.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import weakref
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.data.ptb import PTBCorpus, batchify, bptt_windows
from wpl_keras.utils.validation import check_number
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.nas.resumable import ResumableTraining
from wpl_keras.nas.spaces.rnn.cell import row_moments
from wpl_keras.nas.spaces.rnn.cell import (
    apply_dropout_masks,
    batch_norm_rows,
    clamp_rows,
    draw_dropout_masks,
    enas_cell_sequence,
    enas_cell_sequence_inference,
    sequence_loss,
)
from wpl_keras.nas.spaces.rnn.config import RNNSupernetConfig
from wpl_keras.nas.spaces.rnn.supernet import add_batch_norm_weights
from wpl_keras.utils.serving import save_serving_module


class RNNLanguageModel(keras.Model):
    """Word-level language model whose recurrent cell is the fixed architecture ``arch``.

    ``call(tokens [B, T], state [B, H] or None, training) -> (logits [B, T, V], state)``.

    Args:
        space: the cell space (gives the number of nodes).
        arch: the cell's decisions.
        config: an :class:`RNNSupernetConfig`; the model reads its ``model`` (sizes, dropouts,
            initialisation, hidden-state norm).
        seed: initialisation and dropout seed.
    """

    def __init__(self, space: RNNCellSpace, arch: Sequence[int], config: RNNSupernetConfig,
                 *, seed: int = 0, name: str = "enas_rnn_lm"):
        super().__init__(name=name)
        cfg = config.model
        if space.num_nodes != cfg.num_nodes:
            raise ValueError(
                f"space has {space.num_nodes} nodes but config.model.num_nodes is "
                f"{cfg.num_nodes}."
            )
        self.space = space
        self.arch = space.validate(arch)
        self.cfg = config
        e, h, v = cfg.embedding_size, cfg.hidden_size, cfg.vocab_size
        init = keras.initializers.RandomUniform(-cfg.init_range, cfg.init_range, seed=seed)
        self.embedding = self.add_weight(shape=(v, e), initializer=init, name="embedding")
        self.w_x = self.add_weight(shape=(e, 2 * h), initializer=init, name="w_x")
        self.w_h = self.add_weight(shape=(h, 2 * h), initializer=init, name="w_h")
        self.w_nodes = self.add_weight(shape=(cfg.num_nodes - 1, h, 2 * h), initializer=init,
                                       name="w_nodes")
        self.decoder_bias = self.add_weight(shape=(v,), initializer="zeros", name="decoder_bias")
        self.bn_gamma = self.bn_beta = None
        if cfg.output_batch_norm:
            self.bn_gamma, self.bn_beta = add_batch_norm_weights(self, cfg, seed)
            self.bn_moving_mean = self.add_weight(shape=(h,), initializer="zeros",
                                                 trainable=False, name="bn_moving_mean")
            self.bn_moving_variance = self.add_weight(shape=(h,), initializer="ones",
                                                     trainable=False, name="bn_moving_variance")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._arch_const = np.asarray(self.arch, np.int32)
        self.built = True

    def call(self, tokens, state=None, training=False, differentiable=True):
        """``differentiable=False`` runs the cell without its custom gradient (export)."""
        cfg = self.cfg.model
        tokens = tf.cast(tokens, tf.int32)
        batch, steps = tf.shape(tokens)[0], tf.shape(tokens)[1]
        if state is None:
            state = tf.zeros([batch, cfg.hidden_size], tf.float32)
        embedding = tf.convert_to_tensor(self.embedding)
        w_h = tf.convert_to_tensor(self.w_h)
        w_nodes = tf.convert_to_tensor(self.w_nodes)
        x = tf.gather(embedding, tf.transpose(tokens))  # [T, B, E]
        masks = {}
        if training:
            masks = draw_dropout_masks(batch, cfg, self.seed_generator,
                                       node_shape=tf.shape(w_nodes))
            x, w_h, w_nodes = apply_dropout_masks(x, tokens, w_h, w_nodes, masks)
        xp = tf.reshape(tf.matmul(tf.reshape(x, [-1, cfg.embedding_size]), self.w_x),
                        [steps, batch, 2 * cfg.hidden_size])
        cell = enas_cell_sequence if differentiable else enas_cell_sequence_inference
        outputs, new_state = cell(
            xp, state, w_h, w_nodes, tf.constant(self._arch_const), cfg.num_nodes,
            max_norm=cfg.hidden_max_norm, path_mask=masks.get("path"),
            last_node=cfg.recurrent_state == "last_node",
        )
        if self.bn_gamma is not None:
            outputs = self._batch_norm(outputs, training)
        outputs = tf.transpose(outputs, [1, 0, 2])
        if "output" in masks:
            outputs = outputs * masks["output"]
        logits = tf.matmul(tf.reshape(outputs, [-1, cfg.hidden_size]), embedding,
                           transpose_b=True) + self.decoder_bias
        return tf.reshape(logits, [batch, steps, cfg.vocab_size]), new_state


    def _batch_norm(self, outputs, training):
        """Output BatchNorm of ``outputs [T, B, H]``: in training on the batch statistics
        per step (:func:`~wpl_keras.nas.spaces.rnn.supernet.batch_norm_rows`), updating the moving
        averages once per call, ``m ← (1 − 0.1) m + 0.1 μ̄`` and ``v ← (1 − 0.1) v + 0.1 σ̄²
        n / (n − 1)`` (``μ̄``, ``σ̄²`` the step-averaged batch moments of ``n`` rows; 0.1 and
        the unbiased variance as ``torch.nn.BatchNorm1d``); otherwise on the averages."""
        if not training:
            return batch_norm_rows(outputs, self.bn_gamma, self.bn_beta,
                                   mean=self.bn_moving_mean, variance=self.bn_moving_variance)
        mean, variance = row_moments(outputs)
        rows = tf.cast(tf.shape(outputs)[1], outputs.dtype)
        unbiased = tf.reduce_mean(variance, axis=[0, 1]) * rows / tf.maximum(rows - 1.0, 1.0)
        momentum = BATCH_NORM_MOMENTUM
        self.bn_moving_mean.assign((1.0 - momentum) * self.bn_moving_mean
                                   + momentum * tf.stop_gradient(tf.reduce_mean(mean, [0, 1])))
        self.bn_moving_variance.assign((1.0 - momentum) * self.bn_moving_variance
                                       + momentum * tf.stop_gradient(unbiased))
        return batch_norm_rows(outputs, self.bn_gamma, self.bn_beta, mean=mean,
                               variance=variance)


BATCH_NORM_MOMENTUM = 0.1  # torch.nn.BatchNorm1d's default


def build_language_model(space: RNNCellSpace, arch: Sequence[int], config: RNNSupernetConfig,
                         *, seed: int = 0) -> RNNLanguageModel:
    """A fresh :class:`RNNLanguageModel` for cell ``arch`` (raises for an invalid ``arch``)."""
    return RNNLanguageModel(space, arch, config, seed=seed)


def evaluate_perplexity(model: RNNLanguageModel, ids: np.ndarray, *, batch_size: int,
                        bptt: int, max_batches: Optional[int] = None) -> float:
    """``exp(mean CE)`` over ``ids`` read in BPTT windows, state carried, no dropout."""
    step = _eval_fn(model)
    data = batchify(ids, batch_size)
    state = tf.zeros([batch_size, model.cfg.model.hidden_size])
    total, count = 0.0, 0
    for k, (x, y) in enumerate(bptt_windows(data, bptt)):
        if max_batches is not None and k >= max_batches:
            break
        loss, state = step(tf.constant(x), tf.constant(y), state)
        total += float(loss)
        count += 1
    if count == 0:
        raise ValueError("evaluate_perplexity: no full BPTT window in the data.")
    return float(math.exp(min(total / count, 50.0)))


_EVAL_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _eval_fn(model):
    # Cached outside the model: a traced function stored on the model would be tracked by
    # tf.saved_model.save and its custom gradient would block the export.
    fn = _EVAL_FNS.get(model)
    if fn is None:
        @tf.function(reduce_retracing=True)
        def fn(x, y, state):
            logits, new_state = model(x, state, training=False)
            return sequence_loss(logits, y), new_state

        _EVAL_FNS[model] = fn
    return fn


def _train_step_fn(model: RNNLanguageModel, optimizer, config: RNNSupernetConfig):
    """The traced SGD step ``(x, y, state) -> (loss, state')``: the gradient of the mean
    next-word cross-entropy plus ``l2 · θ``, clipped to global norm ``grad_clip`` (both of
    ``config.optimizer``); the new hidden state's rows are clamped to norm
    ``config.model.hidden_max_norm``."""
    opt, max_norm = config.optimizer, config.model.hidden_max_norm
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_step(x, y, state):
        with tf.GradientTape() as tape:
            logits, new_state = model(x, state, training=True)
            loss = sequence_loss(logits, y)
        grads = tape.gradient(loss, variables)
        grads = [tf.convert_to_tensor(g) + opt.l2 * tf.convert_to_tensor(v)
                 for g, v in zip(grads, variables)]
        grads, _ = tf.clip_by_global_norm(grads, opt.grad_clip)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, clamp_rows(new_state, max_norm)

    return train_step


def train_from_scratch(
    corpus: PTBCorpus,
    arch: Sequence[int],
    config: RNNSupernetConfig,
    epochs: int,
    *,
    space: Optional[RNNCellSpace] = None,
    seed: int = 0,
    max_batches_per_epoch: Optional[int] = None,
    max_eval_batches: Optional[int] = None,
    log=None,
    checkpoint: Optional[ResumableTraining] = None,
) -> Dict[str, object]:
    """Trains the cell ``arch`` from scratch on ``corpus.train`` and reports perplexities.

    SGD of ``config.optimizer``: epoch ``e`` steps with ``lr₀ · d^max(0, e − s)``
    (:meth:`~wpl_keras.nas.spaces.rnn.config.RNNOptimizerConfig.rate`), global-norm clip
    ``grad_clip``, L2 ``λ`` on all weights; the dropouts of ``config.model``; hidden state
    carried across windows. Every epoch reads the training split in order, so batch ``s`` of
    epoch ``e`` is window ``s``: a run restored from ``checkpoint`` (the weights, the SGD
    state, the dropout generator's state, the hidden state and the epoch's loss sum, see
    :class:`~wpl_keras.nas.resumable.ResumableTraining`) continues exactly as the
    uninterrupted run.

    Args:
        corpus: PTB ids.
        arch: the chosen cell.
        config: sizes, dropouts, optimisation settings.
        epochs: passes over the training split.
        space: the cell space (default ``RNNCellSpace(config.model.num_nodes)``).
        seed: initialisation/dropout seed.
        max_batches_per_epoch: cap on training windows per epoch (quick runs).
        max_eval_batches: cap on validation/test windows (quick runs).
        log: optional callable receiving a dict per epoch.
        checkpoint: where the run checkpoints as it goes, and resumes from (None: nothing
            kept).

    Returns:
        ``{"valid_ppl", "test_ppl", "train_ppl", "epochs", "seconds", "model"}``
        (``train_ppl``: ``exp`` of the last epoch's mean training loss; ``seconds``: training
        time over every process of a resumed run).
    """
    epochs = check_number("train_from_scratch: epochs", epochs, minimum=1, integer=True)
    for name, value in (("max_batches_per_epoch", max_batches_per_epoch),
                        ("max_eval_batches", max_eval_batches)):
        check_number(f"train_from_scratch: {name}", value, minimum=1, integer=True,
                     optional=True)
    space = space or RNNCellSpace(config.model.num_nodes)
    model = build_language_model(space, arch, config, seed=seed)
    optimizer = keras.optimizers.SGD(learning_rate=config.optimizer.learning_rate)
    train_step = _train_step_fn(model, optimizer, config)
    state = tf.Variable(tf.zeros([config.batch_size, config.model.hidden_size]),
                        trainable=False, name="hidden_state")
    run = checkpoint or ResumableTraining()
    run.start(model=model, optimizer=optimizer, hidden_state=state)
    with run:
        while run.epoch < epochs:
            epoch = run.epoch
            _train_epoch(train_step, optimizer, run, state, corpus, config,
                         max_batches_per_epoch)
            train_ppl = math.exp(min(run.epoch_done(), 50.0))
            if log is not None:
                log({"epoch": epoch, "train_ppl": train_ppl, "lr": config.optimizer.rate(epoch)})
    train_ppl = math.exp(min(run.last_epoch_loss, 50.0))
    kwargs = dict(batch_size=config.eval_batch_size, bptt=config.eval_bptt,
                  max_batches=max_eval_batches)
    return {
        "valid_ppl": evaluate_perplexity(model, corpus.valid, **kwargs),
        "test_ppl": evaluate_perplexity(model, corpus.test, **kwargs),
        "train_ppl": float(train_ppl),
        "epochs": int(epochs),
        "seconds": run.seconds,
        "model": model,
    }


def _train_epoch(train_step, optimizer, run: ResumableTraining, state: tf.Variable, corpus,
                 config: RNNSupernetConfig, max_batches: Optional[int]) -> None:
    """The rest of epoch ``run.epoch``, from window ``run.step``: the hidden state starts at
    zero with the epoch and is kept in ``state`` after every window (for the checkpoint).

    Raises:
        FloatingPointError: the epoch's loss sum is not finite.
    """
    epoch, done = run.epoch, run.step
    optimizer.learning_rate.assign(config.optimizer.rate(epoch))
    if done == 0:
        state.assign(tf.zeros_like(state))
    data = batchify(corpus.train, config.batch_size)
    for k, (x, y) in enumerate(bptt_windows(data, config.bptt)):
        if max_batches is not None and k >= max_batches:
            break
        if k < done:
            continue
        loss, new_state = train_step(tf.constant(x), tf.constant(y), state.value())
        state.assign(new_state)
        run.batch_done(float(loss))
    if not math.isfinite(run.epoch_mean_loss()):
        raise FloatingPointError(
            f"training diverged in epoch {epoch} (mean loss {run.epoch_mean_loss()}).")


VOCAB_FILE = "vocab.txt"
WORDS_SIGNATURE = "serve_words"


class _ServingModule(tf.Module):
    """Reaches the model through a closure, so that functions traced on it earlier (training
    steps with custom gradients) are not saved and its Keras variables are not tracked
    (:func:`~wpl_keras.utils.serving.save_serving_module` tracks the ``tf.Variable`` objects
    the signatures capture).

    With ``vocab_path`` (one word per line, line ``i`` is the word of id ``i``), the file is
    a SavedModel asset and ``serve_words`` maps words to ids through a
    ``tf.lookup.StaticHashTable`` (unknown words → ``unk_id``) before ``serve``.
    """

    def __init__(self, model: RNNLanguageModel, vocab_path: Optional[str] = None,
                 unk_id: int = 0):
        super().__init__()

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")])
        def serve(tokens):
            vocab_size = model.cfg.model.vocab_size
            in_range = tf.reduce_all((tokens >= 0) & (tokens < vocab_size))
            check = tf.debugging.Assert(in_range, [
                f"tokens: every id must be in [0, {vocab_size}) (the model's vocabulary); got "
                "min and max", tf.reduce_min(tokens), tf.reduce_max(tokens)])
            with tf.control_dependencies([check]):
                tokens = tf.identity(tokens)
            logits, _ = model(tokens, None, training=False, differentiable=False)
            return {"log_probs": tf.nn.log_softmax(logits, axis=-1)}

        self.serve = serve
        if vocab_path is None:
            return
        self.vocab = tf.saved_model.Asset(vocab_path)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocab, key_dtype=tf.string, key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64, value_index=tf.lookup.TextFileIndex.LINE_NUMBER),
            default_value=int(unk_id))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="words")])
        def serve_words(words):
            ids = tf.cast(self.table.lookup(words), tf.int32)
            return {"log_probs": serve(ids)["log_probs"], "ids": ids}

        self.serve_words = serve_words


def check_vocabulary(vocab: Sequence[str], vocab_size: int, unk_token: str) -> int:
    """Validates an export vocabulary; returns the id of ``unk_token``.

    Raises:
        ValueError: naming the problem: a size other than the model's ``vocab_size``, a word
            that is empty, repeated or holds whitespace (the vocabulary file has one word per
            line), or a missing ``unk_token``.
    """
    vocab = list(vocab)
    if len(vocab) != vocab_size:
        raise ValueError(f"export vocabulary has {len(vocab)} words but the model's "
                         f"vocab_size is {vocab_size}; pass the corpus' vocabulary.")
    for i, word in enumerate(vocab):
        if not isinstance(word, str) or not word or any(c.isspace() for c in word):
            raise ValueError(f"export vocabulary word {i} ({word!r}) must be a non-empty "
                             "string without whitespace.")
    if len(set(vocab)) != len(vocab):
        seen = sorted({w for w in vocab if vocab.count(w) > 1})[:5]
        raise ValueError(f"export vocabulary repeats words: {seen}.")
    if unk_token not in vocab:
        raise ValueError(f"export vocabulary has no unknown-word token {unk_token!r}; add it "
                         "or pass unk_token=<the corpus' unknown-word token>.")
    return vocab.index(unk_token)


def export_language_model(model: RNNLanguageModel, arch: Sequence[int], space: RNNCellSpace,
                          export_dir: str, *, vocab: Optional[Sequence[str]] = None,
                          unk_token: str = "<unk>") -> str:
    """Writes the SavedModel and ``cell.json`` as the next version folder of ``export_dir``
    (TensorFlow Serving's layout, :func:`~wpl_keras.utils.serving.save_serving_module`).

    The ``serving_default`` signature maps ``tokens`` (int32 ``[batch, time]``, zero initial
    state) to ``log_probs`` (``[batch, time, vocab]``, ``log p(w_{t+1} | w_{≤t})``).
    With ``vocab`` (``vocab[i]`` is the word of id ``i``), the vocabulary ships as the asset
    ``assets/vocab.txt`` (one word per line) and the ``serve_words`` signature maps ``words``
    (string ``[batch, time]``) to the same ``log_probs`` and the ``ids`` it looked up; a word
    outside the vocabulary reads as ``unk_token``. ``cell.json`` holds the cell (space name,
    decisions, readable string) and the config. Both signatures serve through the
    session-based loader (TensorFlow Serving, ``saved_model_cli run``) as well as
    ``tf.saved_model.load``.

    Returns:
        The version folder, ``<export_dir>/<n>``.
    """
    arch = space.validate(arch)
    if tuple(arch) != tuple(model.arch):
        raise ValueError(
            f"export_language_model: arch {space.to_string(arch)!r} is not the model's cell "
            f"{space.to_string(model.arch)!r}."
        )

    def write_cell(folder: str) -> None:
        with open(os.path.join(folder, "cell.json"), "w") as f:
            json.dump({**space.to_json(arch), "config": model.cfg.to_json()}, f, indent=2)

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, unk_id = None, 0
        if vocab is not None:
            unk_id = check_vocabulary(vocab, model.cfg.model.vocab_size, unk_token)
            vocab_path = os.path.join(tmp, VOCAB_FILE)
            with open(vocab_path, "w", encoding="utf-8") as f:
                f.write("".join(f"{w}\n" for w in vocab))
        module = _ServingModule(model, vocab_path, unk_id)
        signatures = {"serving_default": module.serve}
        if vocab_path is not None:
            signatures[WORDS_SIGNATURE] = module.serve_words
        return save_serving_module(module, export_dir, signatures, side_files=write_cell)

"""The search apps' later stages load the data the search used, a data error is one paragraph
with exit status 2, and --no-verify reaches the loaders (ENAS-RNN, ENAS-CNN, NAO)."""

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest

from apps import enas_search, nao_search
from tests.experiments.test_enas import write_tiny_ptb


@pytest.fixture
def offline(monkeypatch):
    """Every download path fails as it does without internet; WPL_DATA_DIR points nowhere."""
    import keras
    import tensorflow_datasets as tfds

    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise Exception("URL fetch failure on https://example.invalid: None -- offline")

    monkeypatch.setattr(keras.utils, "get_file", fail)
    monkeypatch.setattr(tfds, "load", fail)
    monkeypatch.setattr(tfds, "builder", fail)
    monkeypatch.setenv("WPL_DATA_DIR", "/nonexistent/wpl-data-root")
    return calls


def write_tiny_cifar(folder, per_batch=8):
    """cifar-10-batches-py with ``per_batch`` random images per batch file."""
    folder.mkdir(parents=True)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rng = np.random.default_rng(k)
        x = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = (np.arange(per_batch) + k) % 10
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": labels.tolist()}, f)
    return str(folder)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _assert_data_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.slow
def test_enas_rnn_later_stages_reuse_the_search_data(tmp_path, offline, capsys):
    data = write_tiny_ptb(tmp_path / "ptb")
    out = str(tmp_path / "run")
    assert enas_search.main(["search", "--preset", "tiny", "--epochs", "1", "--data-dir", data,
                             "--out", out]) == 0
    recorded = json.load(open(os.path.join(out, "data_source.json")))
    assert recorded == {"data_dir": os.path.abspath(data), "verify": True}
    assert enas_search.main(["derive", "--samples", "2", "--out", out]) == 0
    assert _last_json(capsys)["num_samples"] == 2
    assert enas_search.main(["train-best", "--out", out]) == 0
    assert np.isfinite(_last_json(capsys)["valid_ppl"])
    assert offline == []
    # An explicit --data-dir overrides the record: an empty folder is a data error.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert enas_search.main(["derive", "--out", out, "--data-dir", str(empty)]) == 2
    _assert_data_error(capsys, "wpl-enas-search", "PTB", str(empty), "train.txt")
    # The record is left as the search wrote it.
    assert json.load(open(os.path.join(out, "data_source.json"))) == recorded


@pytest.mark.slow
def test_enas_cnn_later_stages_reuse_the_search_data(tmp_path, offline, capsys):
    data = write_tiny_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    out = str(tmp_path / "run")
    assert enas_search.main(["search", "--space", "cnn", "--preset", "tiny", "--epochs", "1",
                             "--data-dir", os.path.dirname(data), "--out", out]) == 0
    assert enas_search.main(["derive", "--samples", "2", "--out", out]) == 0
    derived = _last_json(capsys)
    assert len(derived["arch"]) > 0 and np.isfinite(derived["error"])
    assert offline == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert enas_search.main(["train-best", "--out", out, "--data-dir", str(empty)]) == 2
    _assert_data_error(capsys, "CIFAR-10", "cifar-10-batches-py")


@pytest.mark.slow
def test_nao_later_stages_reuse_the_search_data(tmp_path, offline, capsys):
    data = write_tiny_ptb(tmp_path / "ptb")
    out = str(tmp_path / "run")
    assert nao_search.main(["--preset", "tiny", "--epochs", "2", "--quiet", "--data-dir", data,
                            "--out", out]) == 0
    assert json.load(open(os.path.join(out, "data_source.json")))["data_dir"] == data
    # A resumed search reads the recorded data too.
    assert nao_search.main(["--out", out, "--resume", "--epochs", "3", "--quiet"]) == 0
    assert _last_json(capsys)["epochs"] == 3
    # Data given on the command line wins over the recorded one (a failed load records nothing).
    assert nao_search.main(["train-best", "--out", out, "--data-dir",
                            str(tmp_path / "missing")]) == 2
    _assert_data_error(capsys, "wpl-nao-search", "PTB", "missing")
    assert nao_search.main(["train-best", "--out", out]) == 0
    trained = _last_json(capsys)
    assert np.isfinite(trained["valid_ppl"])
    assert nao_search.main(["export", "--out", out]) == 0
    path = _last_json(capsys)["path"]
    assert offline == []
    # The exported language model carries the corpus' vocabulary: words in, log-probs out.
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    with open(os.path.join(path, "assets", "vocab.txt")) as f:
        vocab = f.read().splitlines()
    assert "<unk>" in vocab and "w3" in vocab and "<eos>" in vocab
    words = tf.constant([["w3", "w1", "never-seen", "<eos>"]])
    out_words = loaded.signatures["serve_words"](words=words)
    ids = [vocab.index(w) for w in ("w3", "w1", "<unk>", "<eos>")]
    np.testing.assert_array_equal(out_words["ids"], [ids])
    out_ids = loaded.signatures["serving_default"](tokens=tf.constant([ids], tf.int32))
    np.testing.assert_array_equal(out_words["log_probs"], out_ids["log_probs"])
    assert out_ids["log_probs"].shape == (1, 4, len(vocab))


@pytest.mark.parametrize("app, space, needles", [
    (enas_search, "rnn", ("wpl-enas-search", "PTB", "train.txt")),
    (nao_search, "rnn", ("wpl-nao-search", "PTB", "train.txt")),
    (enas_search, "cnn", ("wpl-enas-search", "CIFAR-10", "cifar-10-batches-py")),
])
def test_failed_download_is_the_projects_error(tmp_path, offline, monkeypatch, capsys, app,
                                               space, needles):
    """No --data-dir, no record, no WPL_DATA_DIR: the loader's download fails offline."""
    monkeypatch.delenv("WPL_DATA_DIR")
    out = str(tmp_path / "run")
    code = app.main(["search", "--space", space, "--preset", "tiny", "--out", out])
    assert code == 2 and offline
    _assert_data_error(capsys, "--data-dir", *needles)
    # A later stage of a run that downloaded (data_dir null) downloads again, and fails alike.
    with open(os.path.join(out, "data_source.json"), "w") as f:
        json.dump({"data_dir": None, "verify": True}, f)
    from wpl_keras.experiments import enas

    cell = enas.build_space(enas.get_preset(space, "tiny"))
    arch = cell.to_string(cell.sample(np.random.default_rng(0)))
    assert app.main(["train-best", "--out", out, "--preset", "tiny", "--space", space,
                     "--arch", arch]) == 2
    _assert_data_error(capsys, "--data-dir", *needles)


def test_two_models_failed_download(tmp_path, offline, monkeypatch, capsys):
    from apps import two_models

    monkeypatch.delenv("WPL_DATA_DIR")
    assert two_models.main(["--out", str(tmp_path / "out")]) == 2 and offline
    _assert_data_error(capsys, "wpl-two-models", "MNIST", "--data-dir")


def _data_error_classes():
    from wpl_keras.data import errors, mnist, ptb

    return [mnist.MnistDataError, mnist.MnistDownloadError, errors.DataError,
            errors.DataDownloadError, errors.DataMissingError, ptb.PTBDataError,
            ptb.PTBMissingError, ptb.PTBDownloadError]


@pytest.mark.parametrize("error_class", _data_error_classes())
@pytest.mark.parametrize("command", ["search", "derive", "train-best"])
def test_every_stage_reports_data_errors(tmp_path, monkeypatch, capsys, error_class, command):
    from wpl_keras.data import ptb

    def broken(*args, **kwargs):
        raise error_class("ptb.valid.txt: line 3 is not UTF-8")

    monkeypatch.setattr(ptb, "load_ptb", broken)
    from wpl_keras.experiments import enas

    space = enas.build_space(enas.get_preset("rnn", "tiny"))
    arch = space.to_string(space.sample(np.random.default_rng(0)))
    for app in (enas_search, nao_search):
        out = str(tmp_path / app.__name__)
        args = [command, "--preset", "tiny", "--out", out, "--data-dir", str(tmp_path)]
        if command == "train-best":
            args += ["--arch", arch]
        if app is nao_search and command == "derive":
            continue  # NAO's derive reads derived.json and loads no data.
        assert app.main(args) == 2
        _assert_data_error(capsys, "ptb.valid.txt: line 3 is not UTF-8", "train.txt")


def _loader_spy(monkeypatch):
    """Replaces load_ptb by a spy that records ``verify`` and loads the tiny corpus without
    the checksum and vocabulary-size checks."""
    from wpl_keras.data import ptb

    original, seen = ptb.load_ptb, []

    def spy(data_dir, **kwargs):
        seen.append(kwargs.pop("verify"))
        return original(data_dir, **{**kwargs, "verify": False, "vocab_size": None})

    monkeypatch.setattr(ptb, "load_ptb", spy)
    return seen


def test_verify_follows_the_flag_and_the_data_check(tmp_path, monkeypatch):
    from wpl_keras.experiments import enas

    seen = _loader_spy(monkeypatch)
    data = write_tiny_ptb(tmp_path / "ptb")
    tiny = enas.get_preset("rnn", "tiny")
    assert not tiny.data_check and not enas.get_preset("cnn", "tiny").data_check
    checked = tiny.replace(data_check=True)
    enas.load_data(checked, data)
    enas.load_data(checked, data, verify=False)
    enas.load_data(tiny, data)  # a test corpus is not the standard file: never verified
    assert seen == [True, False, False]


@pytest.mark.slow
def test_no_verify_reaches_the_loader_and_is_recorded(tmp_path, monkeypatch, capsys):
    from wpl_keras.experiments import enas

    seen = _loader_spy(monkeypatch)
    data = write_tiny_ptb(tmp_path / "ptb")
    tiny = enas.get_preset("rnn", "tiny")
    checked = tiny.replace(data_check=True, task={
        "model": dataclasses.replace(tiny.task.model, vocab_size=31)})
    config = checked.save(str(tmp_path / "checked.json"))
    out = str(tmp_path / "run")
    assert enas_search.main(["search", "--config", config, "--epochs", "1", "--no-verify",
                             "--data-dir", data, "--out", out]) == 0
    assert json.load(open(os.path.join(out, "data_source.json")))["verify"] is False
    assert enas_search.main(["derive", "--samples", "1", "--out", out]) == 0
    assert enas_search.main(["derive", "--samples", "1", "--out", out, "--verify"]) == 0
    assert seen == [False, False, True]
    nao_out = str(tmp_path / "nao")
    assert nao_search.main(["--preset", "tiny", "--epochs", "1", "--quiet", "--no-verify",
                            "--data-dir", data, "--out", nao_out]) == 0
    assert json.load(open(os.path.join(nao_out, "data_source.json")))["verify"] is False
    assert seen[-1] is False


def test_two_models_no_verify_and_data_errors(tmp_path, monkeypatch, capsys):
    from apps import two_models
    from wpl_keras.data import mnist

    seen = []

    def spy(data_dir, **kwargs):
        seen.append(kwargs["verify"])
        raise mnist.MnistDownloadError("MNIST download failed: offline")

    monkeypatch.setattr(mnist, "load_mnist", spy)
    args = ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)]
    assert two_models.main(args + ["--no-verify"]) == 2
    assert two_models.main(args) == 2
    assert seen == [False, True]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "t10k-labels-idx1-ubyte.gz" in err


@pytest.mark.parametrize("app", [enas_search, nao_search])
def test_missing_derived_architecture_or_trained_model_is_named(tmp_path, app, capsys):
    """train-best without derived.json or --arch, and export without a trained model, stop
    with exit status 2 and say what to run; export loads no data and trains nothing."""
    from wpl_keras.experiments import enas

    space = enas.build_space(enas.get_preset("rnn", "tiny"))
    args = ["--preset", "tiny", "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    assert app.main(["train-best", *args]) == 2
    assert "derived.json is missing" in capsys.readouterr().err
    for extra in ([], ["--arch", space.to_string(space.sample(np.random.default_rng(0)))]):
        assert app.main(["export", *args, *extra]) == 2
        err = capsys.readouterr().err
        assert "train_best.json holds no trained model: run train-best on --out" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, no data loaded


@pytest.mark.parametrize("app", [enas_search, nao_search])
def test_help_names_the_data_options(app, capsys):
    with pytest.raises(SystemExit) as info:
        app.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--data-dir", "--verify", "--no-verify", "data_source.json", "WPL_DATA_DIR"):
        assert option in text, option


@pytest.mark.parametrize("space", ["rnn", "cnn"])
@pytest.mark.parametrize("kind", ["default", "mirrored", "multi_worker", "auto"])
def test_strategy_flag_sets_the_task_strategy_of_either_space(tmp_path, space, kind):
    """``--strategy`` overrides the task config's strategy, for ENAS and NAO, either space;
    without it the preset's is kept."""
    for app, task_of in ((enas_search, lambda c: c.task), (nao_search, lambda c: c.base.task)):
        common = ["--space", space, "--preset", "tiny", "--out", str(tmp_path)]
        args = app.build_parser().parse_args(common + ["--strategy", kind, "--seed", "4"])
        config = app.make_config(args)
        assert task_of(config).strategy == kind, app
        plain = app.make_config(app.build_parser().parse_args(common))
        assert dataclasses.replace(task_of(config), strategy=task_of(plain).strategy) == \
            task_of(plain)  # nothing else of the task changed


@pytest.mark.parametrize("app", [enas_search, nao_search])
def test_strategy_flag_refuses_unknown_kinds_and_lists_the_known_ones(app, capsys):
    from apps._common import STRATEGY_KINDS
    from wpl_keras.nas.search.distribute import KINDS

    assert STRATEGY_KINDS == KINDS  # the apps' copy of the kinds (kept TF-free) is the same
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--out", "x", "--strategy", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        app.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--strategy", "mirrored", "multi_worker", "TF_CONFIG"):
        assert word in text, word


def test_strategy_flag_on_a_task_without_strategy_is_named():
    from apps._common import with_task_strategy

    @dataclasses.dataclass(frozen=True)
    class OneDevice:
        size: int = 1

    args = nao_search.build_parser().parse_args(["--out", "x", "--strategy", "mirrored"])
    with pytest.raises(SystemExit, match="OneDevice has no strategy field"):
        with_task_strategy(OneDevice(), args)
    args = nao_search.build_parser().parse_args(["--out", "x"])
    assert with_task_strategy(OneDevice(), args) == OneDevice()


def test_rnn_search_runs_under_the_strategy_of_its_config(tmp_path):
    """The RNN experiment builds its task under ``make_strategy(config.task.strategy)``, and the
    tiny preset runs on one device."""
    from wpl_keras.experiments import enas

    data = write_tiny_ptb(tmp_path / "ptb")
    config = enas.get_preset("rnn", "tiny").replace(task={"strategy": "default"})
    corpus, config = enas.prepare(config, data, verify=False)
    task, _, _ = enas.build_search(config, corpus)
    assert task.strategy.num_replicas_in_sync == 1
    assert enas.write_dir(str(tmp_path / "run"), task) == str(tmp_path / "run")
    assert enas.get_preset("rnn", "tiny").task.strategy == "auto"


class _Kill(RuntimeError):
    """Stands for kill -9: nothing is saved when it is raised."""


@pytest.mark.slow
def test_train_best_killed_then_resumed_gives_the_uninterrupted_metrics(tmp_path, offline,
                                                                        monkeypatch, capsys):
    """wpl-enas-search train-best (RNN, 3 epochs of 2 batches, a checkpoint every 2 batches)
    killed after 3 batches, before anything is saved for the third, then ``--resume`` alone:
    the recorded architecture, epochs, config and data give the uninterrupted run's metrics."""
    from wpl_keras.experiments import enas
    from wpl_keras.nas.resumable import ResumableTraining

    data = write_tiny_ptb(tmp_path / "ptb")
    space = enas.build_space(enas.get_preset("rnn", "tiny"))
    arch = space.to_string(space.sample(np.random.default_rng(1)))
    first = ["train-best", "--preset", "tiny", "--arch", arch, "--data-dir", data,
             "--train-epochs", "3", "--train-checkpoint-every", "2"]
    assert enas_search.main([*first, "--out", str(tmp_path / "full")]) == 0
    full = _last_json(capsys)
    out = str(tmp_path / "killed")
    count, batches, limit = ResumableTraining.batch_done, [], [3]

    def batch_done(run, loss):
        if len(batches) == limit[0]:
            raise _Kill("simulated kill -9")
        batches.append(loss)
        count(run, loss)

    monkeypatch.setattr(ResumableTraining, "batch_done", batch_done)
    with pytest.raises(_Kill):
        enas_search.main([*first, "--out", out])
    batches.clear()
    limit[0] = None
    assert not os.path.exists(os.path.join(out, "train_best.json"))
    assert enas_search.main(["train-best", "--out", out]) == 2  # not without --resume
    assert "already holds a started train-best run; pass --resume" in capsys.readouterr().err
    assert enas_search.main(["train-best", "--out", out, "--resume", "--train-epochs",
                             "4"]) == 2
    assert "trains 3 epochs, not the given 4" in capsys.readouterr().err
    assert enas_search.main(["train-best", "--out", out, "--resume"]) == 0
    resumed = _last_json(capsys)
    assert len(batches) == 4  # the last save was after batch 2: batches 3-6 trained again
    assert resumed["epochs"] == 3 and resumed["arch"] == full["arch"]
    for key in ("valid_ppl", "test_ppl", "train_ppl"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6), key
    assert offline == []


@pytest.mark.slow
def test_exports_of_trained_models_serve_in_a_session(tmp_path, offline, capsys):
    """The NAO export (RNN language model, both signatures) and the ENAS CNN export of
    train-best models, loaded by the session-based loader (TensorFlow Serving's path) in one
    subprocess, give the outputs of the trained models in Python."""
    import tensorflow as tf

    from tests.utils.session_loader import serve_in_session
    from wpl_keras.data.cifar10_pipeline import normalize
    from wpl_keras.experiments import enas
    from wpl_keras.nas.spaces.cnn.model import classifier_of

    runs = {}
    for app, space_name, data in (
            (nao_search, "rnn", write_tiny_ptb(tmp_path / "ptb")),
            (enas_search, "cnn", os.path.dirname(
                write_tiny_cifar(tmp_path / "cifar" / "cifar-10-batches-py")))):
        space = enas.build_space(enas.get_preset(space_name, "tiny"))
        arch = space.to_string(space.sample(np.random.default_rng(0)))
        out = str(tmp_path / space_name)
        assert app.main(["train-best", "--space", space_name, "--preset", "tiny", "--arch",
                         arch, "--data-dir", data, "--out", out]) == 0
        assert app.main(["export", "--out", out]) == 0
        runs[space_name] = (out, _last_json(capsys)["path"])
        assert runs[space_name][1] == os.path.join(out, "export", "1")
    lm, _, _ = enas.load_trained_model(runs["rnn"][0])
    with open(os.path.join(runs["rnn"][1], "assets", "vocab.txt")) as f:
        vocab = f.read().splitlines()
    words = np.array([["w3", "w1", "never-seen", "<eos>"]])
    ids = np.array([[vocab.index(w) for w in ("w3", "w1", "<unk>", "<eos>")]], np.int32)
    lm_expected = tf.nn.log_softmax(lm(tf.constant(ids))[0], axis=-1).numpy()
    cnn, _, _ = enas.load_trained_model(runs["cnn"][0])
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    cnn_expected = tf.nn.softmax(classifier_of(cnn)(normalize(images), training=False)).numpy()
    by_ids, by_words, by_images = serve_in_session([
        {"dir": runs["rnn"][1], "signature": "serving_default", "inputs": {"tokens": ids}},
        {"dir": runs["rnn"][1], "signature": "serve_words", "inputs": {"words": words}},
        {"dir": runs["cnn"][1], "signature": "serving_default", "inputs": {"images": images}},
    ], str(tmp_path / "session"))
    np.testing.assert_allclose(by_ids["log_probs"], lm_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(by_words["ids"], ids)
    np.testing.assert_allclose(by_words["log_probs"], lm_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_images["probabilities"], cnn_expected, rtol=1e-5, atol=1e-6)
    assert offline == []

"""ENAS experiment configs, space registry, runners and the wpl-enas-search app."""

import json
import os

import numpy as np
import pytest

from apps import enas_search
from wpl_keras.experiments import enas
from wpl_keras.nas.search.enas import SearchConfig
from wpl_keras.experiments.presets import paper_search


def write_tiny_ptb(directory, *, words=30, lines=60, seed=0):
    """PTB-like text: lines of 8 words from a small vocabulary (every word in train), with
    PTB's unknown-word token ``<unk>`` as one of the ``words``."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(words - 1)] + ["<unk>"]
    os.makedirs(directory, exist_ok=True)
    for split, n in (("train", lines), ("valid", lines // 4), ("test", lines // 4)):
        with open(os.path.join(directory, f"{split}.txt"), "w") as f:
            if split == "train":
                f.write(" " + " ".join(vocab) + " \n")
            for _ in range(n):
                f.write(" " + " ".join(rng.choice(vocab, 8)) + " \n")
    return str(directory)


def test_registry_and_presets():
    assert {"rnn", "cnn"} <= set(enas.available_spaces())
    with pytest.raises(ValueError, match="unknown search space"):
        enas.get_space("mlp")
    with pytest.raises(ValueError, match="unknown preset"):
        enas.get_preset("rnn", "huge")
    paper = enas.get_preset("rnn", "paper")
    assert paper.search == paper_search()
    assert paper.task.model.hidden_size == 1000 and paper.task.model.num_nodes == 12
    assert paper.controller.temperature == 5.0 and paper.controller.baseline_decay == 0.95
    small = enas.get_preset("rnn", "cpu_small", seed=3)
    assert small.preset == "cpu-small" and small.seed == 3
    with pytest.raises(ValueError, match="module.path"):
        enas.register_space("x", "no_colon")


def test_config_json_round_trip(tmp_path):
    config = enas.get_preset("rnn", "cpu-small").replace(
        search={"epochs": 2, "wpl": False},
        task={"model": {"hidden_size": 32, "embedding_size": 32}}
    )
    path = config.save(str(tmp_path / "experiment.json"))
    again = enas.ENASExperimentConfig.load(path)
    assert again == config
    assert (again.search.epochs == 2 and not again.search.wpl
            and again.task.model.hidden_size == 32)
    assert config.with_wpl(True).search.wpl
    with pytest.raises(TypeError, match="dataclass"):
        enas.ENASExperimentConfig(space="rnn", preset="x", task={}, search=SearchConfig())


def test_rnn_task_wpl_config_round_trips_and_old_fields_are_named(tmp_path):
    from wpl_keras.wpl.config import WPLConfig

    config = enas.get_preset("rnn", "tiny").replace(
        task={"wpl": WPLConfig(fisher_momentum=0.5, clip_norm=None, mode="gradient")})
    path = config.save(str(tmp_path / "experiment.json"))
    with open(path) as f:
        saved = json.load(f)
    assert saved["task"]["wpl"] == {"fisher_momentum": 0.5, "clip_norm": None,
                                    "mode": "gradient", "fisher_normalization": "none",
                                    "fisher_source": "train", "fisher_gradient": "data",
                                    "l2_placement": None}
    again = enas.ENASExperimentConfig.load(path)
    assert again == config and isinstance(again.task.wpl, WPLConfig)
    # An experiment.json of the layout with the task's own WPL fields.
    old = {k: v for k, v in saved["task"].items() if k != "wpl"}
    old.update(wpl_strength=60.0, wpl_momentum=0.9, wpl_clip_norm=10.0, wpl_mode="proximal")
    with pytest.raises(ValueError, match=r"wpl_momentum -> `wpl.fisher_momentum`"):
        enas.ENASExperimentConfig.from_json({**saved, "task": old})
    saved["task"]["wpl"]["momentum"] = 0.9
    with pytest.raises(ValueError, match="unknown WPLConfig fields"):
        enas.ENASExperimentConfig.from_json(saved)


def test_app_help_explains_options(capsys):
    with pytest.raises(SystemExit) as info:
        enas_search.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--space", "--preset", "--wpl", "--no-wpl", "--data-dir", "--out", "--resume",
                   "--samples", "--train-epochs", "--export-dir", "derive", "train-best",
                   "export"):
        assert option in text


def test_app_config_overrides(tmp_path, monkeypatch):
    parser = enas_search.build_parser()
    args = parser.parse_args(["--preset", "tiny", "--no-wpl", "--epochs", "4", "--alpha", "7",
                              "--out", str(tmp_path), "--seed", "5"])
    config = enas_search.make_config(args)
    assert config.search.epochs == 4 and not config.search.wpl
    assert config.search.strength == 7.0 and config.seed == 5
    monkeypatch.setenv("WPL_DATA_DIR", "/data/root")
    assert enas_search._data_dir(args, enas.get_space("rnn")) == "/data/root/ptb"


@pytest.mark.slow
def test_app_search_derive_export_on_tiny_text(tmp_path, seed, capsys):
    """The real RNN task end to end through the app (resume is tested in tests/nas)."""
    data = write_tiny_ptb(tmp_path / "ptb")
    out = str(tmp_path / "run")
    common = ["--data-dir", data, "--out", out]
    assert enas_search.main(["search", "--preset", "tiny", "--epochs", "2", *common]) == 0
    # The saved run is complete: searching again without --resume is refused.
    with pytest.raises(FileExistsError):
        enas_search.main(["search", *common])
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert [r["epoch"] for r in history] == [0, 1]
    assert history[1]["wpl_active"] and history[1]["wpl_strength"] == 60.0
    assert all(np.isfinite(r["mean_diff"]) for r in history)
    saved = enas.ENASExperimentConfig.load(os.path.join(out, "experiment.json"))
    assert saved.preset == "tiny" and saved.task.model.vocab_size == 31
    assert enas_search.main(["derive", "--samples", "3", *common]) == 0
    with open(os.path.join(out, "derived.json")) as f:
        derived = json.load(f)
    enas.build_space(saved).validate(derived["arch"])
    assert derived["error"] == min(c["error"] for c in derived["candidates"])
    assert os.path.exists(os.path.join(out, "derived.png"))
    # Nothing trained yet: export refuses (exit status 2) and says to run train-best.
    capsys.readouterr()
    assert enas_search.main(["export", *common]) == 2
    assert "run train-best on --out" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "export"))
    # train-best (capped at 2 batches by the tiny preset) keeps the weights it describes.
    assert enas_search.main(["train-best", "--train-epochs", "2", *common]) == 0
    with open(os.path.join(out, "train_best.json")) as f:
        trained = json.load(f)
    assert trained["arch"] == derived["arch"] and np.isfinite(trained["valid_ppl"])
    assert trained["epochs"] == 2 and trained["weights"] == "train_best.weights.h5"
    weights = os.path.join(out, trained["weights"])
    stamp = os.stat(weights).st_mtime_ns
    # export exports that model and trains nothing: the record and weights stay as they were.
    assert enas_search.main(["export", *common]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["path"] == \
        os.path.join(out, "export", "1")
    assert os.path.exists(os.path.join(out, "export", "1", "saved_model.pb"))
    assert os.path.exists(os.path.join(out, "export", "1", "cell.json"))
    with open(os.path.join(out, "train_best.json")) as f:
        assert json.load(f) == trained
    assert os.stat(weights).st_mtime_ns == stamp
    # train-best again without --resume is refused; with --resume the finished run is reported.
    assert enas_search.main(["train-best", *common]) == 2
    assert "--resume" in capsys.readouterr().err
    assert enas_search.main(["train-best", "--resume", *common]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["valid_ppl"] == \
        trained["valid_ppl"]
    assert os.stat(weights).st_mtime_ns == stamp


def test_cnn_config_with_nested_task_fields_round_trips_and_refuses_unknown_ones(tmp_path):
    from wpl_keras.wpl.config import WPLConfig

    config = enas.get_preset("cnn", "tiny").replace(task={"wpl": WPLConfig(mode="gradient")})
    path = config.save(str(tmp_path / "experiment.json"))
    again = enas.ENASExperimentConfig.load(path)
    assert again == config and again.task.wpl.mode == "gradient"
    obj = config.to_json()
    obj["task"]["wpl"]["strength"] = 60.0
    with pytest.raises(ValueError, match="strength"):
        enas.ENASExperimentConfig.from_json(obj)


@pytest.mark.parametrize("fields, error, match", [
    (dict(derive_samples=0), ValueError, "ENASExperimentConfig.derive_samples"),
    (dict(train_epochs=-1), ValueError, "ENASExperimentConfig.train_epochs"),
    (dict(train_epochs=1.5), TypeError, "ENASExperimentConfig.train_epochs"),
    (dict(seed="0"), TypeError, "ENASExperimentConfig.seed"),
    (dict(train_max_batches=0), ValueError, "ENASExperimentConfig.train_max_batches"),
])
def test_experiment_config_refuses_bad_numbers(fields, error, match):
    import dataclasses

    with pytest.raises(error, match=f"{match} must be"):
        dataclasses.replace(enas.get_preset("rnn", "tiny"), **fields)


@pytest.mark.parametrize("field, value, error", [
    ("units", 0, ValueError), ("temperature", 0.0, ValueError), ("tanh_constant", "2.5", TypeError),
    ("learning_rate", np.float32(-1e-3), ValueError), ("baseline_decay", 1.0, ValueError),
    ("entropy_weight", float("nan"), ValueError), ("units", 100.0, TypeError),
])
def test_controller_config_refuses_bad_numbers(field, value, error):
    with pytest.raises(error, match=f"ControllerConfig.{field} must be"):
        enas.ControllerConfig(**{field: value})
    assert enas.ControllerConfig(temperature=None, learning_rate=np.float32(0.5)).learning_rate \
        == 0.5


def test_cnn_task_config_refuses_bad_numbers():
    from wpl_keras.nas.spaces.cnn.task import CNNTaskConfig

    with pytest.raises(ValueError, match="CNNTaskConfig.num_valid must be an integer >= 1"):
        CNNTaskConfig(num_valid=0)
    with pytest.raises(TypeError, match="CNNTaskConfig.final_train_size must be"):
        CNNTaskConfig(final_train_size=1e4)
    assert CNNTaskConfig(batch_size=np.int64(8)).batch_size == 8


def test_experiment_replace_sets_nested_fields_through_replace_fields():
    """ENASExperimentConfig.replace and NAOExperimentConfig.replace change only the nested
    fields given (one helper, replace_fields), run each config's checks, and name the
    method and the field in their errors."""
    from wpl_keras.experiments.nao import nao_preset

    config = enas.get_preset("cnn", "tiny")
    new = config.replace(seed=3, search={"epochs": 2}, task={"optimizer": {"lr_max": 0.5}})
    assert (new.seed, new.search.epochs, new.task.optimizer.lr_max) == (3, 2, 0.5)
    assert new.task.optimizer.momentum == config.task.optimizer.momentum
    assert new.search.strength == config.search.strength and new.task.final == config.task.final
    with pytest.raises(ValueError, match="ENASExperimentConfig.replace.*no field 'epoch'"):
        config.replace(search={"epoch": 2})
    with pytest.raises(ValueError, match="ENASExperimentConfig.replace.*epochs"):
        config.replace(search={"epochs": 0})
    nao = nao_preset("rnn", "tiny")
    moved = nao.replace(output_dropout=0.25, search={"wpl": False}, nao={"units": 8})
    assert (moved.output_dropout, moved.search.wpl, moved.nao.units) == (0.25, False, 8)
    assert moved.nao.token_embedding == nao.nao.token_embedding
    with pytest.raises(ValueError, match="NAOExperimentConfig.replace.*no field 'unit'"):
        nao.replace(nao={"unit": 8})


def test_nao_cpu_small_sizes_only_the_fields_a_task_has():
    from wpl_keras.experiments.nao import nao_preset

    rnn = nao_preset("rnn", "cpu-small").base.task
    assert (rnn.batch_size, rnn.bptt, rnn.eval_batch_size, rnn.eval_bptt) == (32, 20, 32, 20)
    assert rnn.model.embedding_size == rnn.model.hidden_size == 128
    cnn, plain = nao_preset("cnn", "cpu-small").base.task, enas.get_preset("cnn", "cpu-small").task
    assert cnn.batch_size == 32 and cnn.eval_batch_size == 32
    assert cnn.final == plain.final  # FinalConfig.batch_size is not the search batch



# --------------------------------------------------------------------------- the sampler
def test_sampler_field_defaults_to_enas_round_trips_and_refuses_unknown_ones(tmp_path):
    import dataclasses

    config = enas.get_preset("rnn", "tiny")
    assert config.sampler == "enas" and enas.SAMPLERS == ("enas", "uniform")
    uniform = dataclasses.replace(config, sampler="uniform")
    path = uniform.save(str(tmp_path / "experiment.json"))
    assert json.load(open(path))["sampler"] == "uniform"
    assert enas.ENASExperimentConfig.load(path) == uniform
    # An experiment.json written before the field existed reads as ENAS.
    old = {k: v for k, v in uniform.to_json().items() if k != "sampler"}
    assert enas.ENASExperimentConfig.from_json(old).sampler == "enas"
    with pytest.raises(ValueError, match=r"ENASExperimentConfig.sampler must be one of "
                                         r"\['enas', 'uniform'\], got 'random'"):
        dataclasses.replace(config, sampler="random")


def test_builders_refuse_the_other_sampler_and_resume_refuses_another_sampler(tmp_path):
    import dataclasses

    config = enas.get_preset("rnn", "tiny")
    uniform = dataclasses.replace(config, sampler="uniform")
    with pytest.raises(ValueError, match="use build_uniform_search"):
        enas.build_search(uniform, None)
    with pytest.raises(ValueError, match="use build_search"):
        enas.build_uniform_search(config, None)
    out = str(tmp_path)
    enas.check_resume_sampler(uniform, out)  # nothing saved: nothing to refuse
    uniform.save(os.path.join(out, "experiment.json"))
    enas.check_resume_sampler(uniform, out)
    with pytest.raises(ValueError, match="uses the 'uniform' sampler.*--sampler uniform"):
        enas.check_resume_sampler(config, out)
    # A run saved before the field existed is an ENAS run.
    with open(os.path.join(out, "experiment.json"), "w") as f:
        json.dump({k: v for k, v in config.to_json().items() if k != "sampler"}, f)
    enas.check_resume_sampler(config, out)
    with pytest.raises(ValueError, match="uses the 'enas' sampler"):
        enas.check_resume_sampler(uniform, out)


def test_app_sampler_flag_sets_the_config_and_lists_the_samplers(tmp_path, capsys):
    from apps.enas_search import SAMPLERS

    assert SAMPLERS == enas.SAMPLERS
    parser = enas_search.build_parser()
    for given, expected in ((["--sampler", "uniform"], "uniform"), ([], "enas")):
        args = parser.parse_args(["--preset", "tiny", "--out", str(tmp_path), *given])
        assert enas_search.make_config(args).sampler == expected
    with pytest.raises(SystemExit):
        parser.parse_args(["--sampler", "random", "--out", str(tmp_path)])
    assert "invalid choice: 'random'" in capsys.readouterr().err


@pytest.mark.slow
def test_app_uniform_search_derive_train_best_export_on_tiny_text(tmp_path, seed, capsys):
    """``--sampler uniform`` end to end: a search without controller phase whose trained
    architectures are the sampler's stream, a resume with another sampler refused, derive
    from the restored sampler, train-best and export as for ENAS."""
    from wpl_keras.nas.search.uniform import UniformSampler

    data = write_tiny_ptb(tmp_path / "ptb")
    out = str(tmp_path / "run")
    common = ["--data-dir", data, "--out", out, "--quiet"]
    assert enas_search.main(["search", "--sampler", "uniform", "--preset", "tiny",
                             "--epochs", "1", *common]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["sampler"] == "uniform"
    saved = enas.ENASExperimentConfig.load(os.path.join(out, "experiment.json"))
    assert saved.sampler == "uniform"
    history = json.load(open(os.path.join(out, "history.json")))
    sizes = enas.build_space(saved).decision_sizes
    expected = UniformSampler(sizes, seed=saved.seed)
    assert [tuple(a) for a in history[0]["archs"]] == [
        expected.sample_architecture() for _ in history[0]["archs"]]
    assert "mean_reward" not in history[0]
    assert json.load(open(os.path.join(out, "search_config.json")))["sampler"] == "uniform"
    assert enas_search.main(["search", "--sampler", "enas", "--resume", *common]) == 2
    assert "cannot resume with the 'enas' sampler" in capsys.readouterr().err
    assert enas_search.main(["search", "--epochs", "2", "--resume", *common]) == 0
    capsys.readouterr()
    assert enas_search.main(["derive", "--samples", "3", *common]) == 0
    derived = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert derived["sampler"] == "uniform" and derived["num_samples"] == 3
    enas.build_space(saved).validate(derived["arch"])
    assert enas_search.main(["train-best", *common]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out.splitlines()[-1])["valid_ppl"])
    assert enas_search.main(["export", *common]) == 0
    assert os.path.exists(os.path.join(out, "export", "1", "saved_model.pb"))

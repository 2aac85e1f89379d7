"""The options shared by the search-quality and ranking benchmarks: seeds, defaults, and the
preset and budget they give."""

import argparse

import pytest

from wpl_keras.experiments import enas
from wpl_keras.experiments.from_scratch import TrainBudget
from wpl_keras.experiments.protocol_options import (
    add_protocol_arguments,
    experiment_and_budget,
    experiment_from_arguments,
    parse_seeds,
)


def test_parse_seeds_takes_distinct_integers_and_names_the_text_otherwise():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds(" 3, 1 ,") == (3, 1)
    for text, message in (("0,x", "comma-separated integers, got '0,x'"),
                          ("1,1", "distinct seeds, got '1,1'"), ("", "distinct seeds")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_seeds(text)


def test_protocol_arguments_defaults_and_flags():
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    args = parser.parse_args([])
    assert (args.space, args.preset, args.seeds, args.verify, args.resume, args.quiet) == (
        "rnn", "cpu-small", (0, 1, 2), True, False, False)
    assert (args.out, args.train_epochs, args.train_max_batches, args.train_size) == (
        None, None, None, None)
    args = parser.parse_args(["--space", "cnn", "--seeds", "4,5", "--no-verify", "--quiet",
                              "--train-size", "100"])
    assert (args.space, args.seeds, args.verify, args.quiet, args.train_size) == (
        "cnn", (4, 5), False, True, 100)
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "1,1"])


def test_experiment_and_budget_takes_the_presets_budget_and_each_override():
    config, budget = experiment_and_budget("rnn", "cpu-small")
    assert config == enas.get_preset("rnn", "cpu-small")
    assert budget == TrainBudget.of_preset(config) == TrainBudget(epochs=1, max_batches=200)
    quiet, changed = experiment_and_budget("rnn", "cpu-small", quiet=True, epochs=3,
                                           max_batches=7)
    assert quiet.search.verbose == 0 and quiet.task == config.task
    assert changed == TrainBudget(epochs=3, max_batches=7)
    _, cnn = experiment_and_budget("cnn", "cpu-small", train_size=50)
    assert cnn == TrainBudget(epochs=2, train_size=50)
    with pytest.raises(ValueError, match="max_batches does not apply to the cnn space"):
        experiment_and_budget("cnn", "cpu-small", max_batches=3)
    with pytest.raises(ValueError, match="train_size does not apply to the rnn space"):
        experiment_and_budget("rnn", "cpu-small", train_size=3)
    with pytest.raises(ValueError, match="epochs"):
        experiment_and_budget("rnn", "cpu-small", epochs=0)


def test_experiment_from_arguments_applies_the_overrides_and_exits_on_a_foreign_one(capsys):
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    config, budget = experiment_from_arguments(
        parser, parser.parse_args(["--quiet", "--train-epochs", "2", "--train-max-batches", "7"]))
    assert (config.space, config.search.verbose, budget.epochs, budget.max_batches) == (
        "rnn", 0, 2, 7)
    with pytest.raises(SystemExit) as exit_info:
        experiment_from_arguments(parser, parser.parse_args(["--train-size", "3"]))
    assert exit_info.value.code == 2
    assert "train_size" in capsys.readouterr().err

"""The presets of the search, the NAO search and the RNN task live in experiments/ only."""

import pytest

from wpl_keras.experiments import enas
from wpl_keras.experiments.presets import (
    cpu_small_nao_search,
    cpu_small_rnn_task,
    cpu_small_search,
    paper_rnn_model,
    paper_rnn_task,
    paper_search,
)
from wpl_keras.nas.search.enas import SearchConfig
from wpl_keras.nas.search.nao import NAOSearchConfig
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNOptimizerConfig, RNNSupernetConfig


def test_the_config_classes_hold_no_presets():
    for kind in (SearchConfig, NAOSearchConfig, RNNSupernetConfig, RNNModelConfig):
        assert not hasattr(kind, "paper") and not hasattr(kind, "cpu_small"), kind


def test_presets_take_overrides_and_are_what_the_experiments_use():
    assert paper_search(epochs=3).epochs == 3 and paper_search().strength_decay == "linear"
    small = cpu_small_search(flush_every=0)
    assert (small.epochs, small.strength_decay, small.flush_every) == (10, None, 0)
    assert type(cpu_small_nao_search()) is NAOSearchConfig
    assert cpu_small_nao_search(seed_archs=20).seed_archs == 20
    assert paper_rnn_task().model == paper_rnn_model()
    assert paper_rnn_task(model={"num_nodes": 3}).model == RNNModelConfig(num_nodes=3)
    assert cpu_small_rnn_task(optimizer=RNNOptimizerConfig(learning_rate=1.0)).optimizer == (
        RNNOptimizerConfig(learning_rate=1.0))
    assert enas.get_preset("rnn", "paper").search == paper_search()
    assert enas.get_preset("rnn", "paper").task == paper_rnn_task()
    with pytest.raises(TypeError):
        paper_search(epoch=3)

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.config import WPLConfig


def test_defaults_are_the_papers_and_json_round_trips():
    config = WPLConfig()
    assert (config.fisher_momentum, config.clip_norm, config.mode) == (0.9, 10.0, "proximal")
    other = WPLConfig(fisher_momentum=0.5, clip_norm=None, mode="gradient")
    assert WPLConfig.from_json(other.to_json()) == other


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("fisher_momentum", 0.0, ValueError),
        ("fisher_momentum", 1.5, ValueError),
        ("fisher_momentum", -0.1, ValueError),
        ("fisher_momentum", math.nan, ValueError),
        ("fisher_momentum", np.float32(-0.5), ValueError),
        ("fisher_momentum", True, TypeError),
        ("fisher_momentum", "0.9", TypeError),
        ("fisher_momentum", None, TypeError),
        ("clip_norm", 0.0, ValueError),
        ("clip_norm", -1.0, ValueError),
        ("clip_norm", math.inf, ValueError),
        ("clip_norm", math.nan, ValueError),
        ("clip_norm", np.float64("nan"), ValueError),
        ("clip_norm", "10", TypeError),
        ("clip_norm", np.array([1.0, 2.0]), TypeError),
        ("mode", "prox", ValueError),
        ("mode", None, ValueError),
    ],
)
def test_bad_values_name_the_field(field, value, error):
    with pytest.raises(error, match=f"WPLConfig.{field}"):
        WPLConfig(**{field: value})


@pytest.mark.parametrize("kind", [float, np.float32, np.float64, np.array, tf.constant,
                                  keras.ops.convert_to_tensor])
def test_numpy_and_tensor_scalars_become_python_floats(kind):
    config = WPLConfig(fisher_momentum=kind(0.5), clip_norm=kind(2.0))
    assert (config.fisher_momentum, config.clip_norm) == (0.5, 2.0)
    assert type(config.fisher_momentum) is float and type(config.clip_norm) is float
    assert WPLConfig.from_json(json.dumps(config.to_json())) == config


def test_unknown_json_field_is_refused():
    with pytest.raises(ValueError, match="strength"):
        WPLConfig.from_json({"strength": 60.0})


def test_fisher_normalization_default_choices_and_json():
    assert WPLConfig().fisher_normalization == "none"
    for choice in ("none", "tensor_norm", "mean"):
        config = WPLConfig(fisher_normalization=choice)
        assert WPLConfig.from_json(config.to_json()) == config
        assert WPLConfig.from_json(json.dumps(config.to_json())).fisher_normalization == choice
    # "mean" does not use clip_norm, so it may be None
    assert WPLConfig(fisher_normalization="mean", clip_norm=None).clip_norm is None


@pytest.mark.parametrize("value", ["tensor-norm", "Tensor_Norm", "", None, 1, "clip"])
def test_unknown_fisher_normalization_names_the_field_and_choices(value):
    with pytest.raises(ValueError, match=r"WPLConfig.fisher_normalization must be one of"):
        WPLConfig(fisher_normalization=value)


def test_tensor_norm_needs_clip_norm():
    with pytest.raises(ValueError, match="clip_norm is None"):
        WPLConfig(fisher_normalization="tensor_norm", clip_norm=None)


def test_fisher_normalization_round_trips_inside_task_configs():
    from wpl_keras.nas.spaces.cnn.task import CNNTaskConfig
    from wpl_keras.nas.spaces.rnn.config import RNNSupernetConfig

    wpl = WPLConfig(fisher_normalization="tensor_norm", clip_norm=10.0)
    for kind in (RNNSupernetConfig, CNNTaskConfig):
        config = kind(wpl=wpl)
        back = kind.from_json(json.dumps(config.to_json()))
        assert back.wpl == wpl and back.wpl.fisher_normalization == "tensor_norm"
        with pytest.raises(ValueError, match="fisher_normalization"):
            kind.from_json({"wpl": {"fisher_normalization": "tensor"}})


def test_fisher_source_default_choices_and_json_round_trip():
    assert WPLConfig().fisher_source == "train"
    for choice in ("train", "valid"):
        config = WPLConfig(fisher_source=choice, mode="gradient", clip_norm=None)
        assert WPLConfig.from_json(config.to_json()) == config
        assert WPLConfig.from_json(json.dumps(config.to_json())).fisher_source == choice


@pytest.mark.parametrize("value", ["validation", "Valid", "", None, 0, True, ["valid"]])
def test_unknown_fisher_source_names_the_field_and_choices(value):
    with pytest.raises(ValueError, match=r"WPLConfig.fisher_source must be one of \('train', "
                                         r"'valid'\)"):
        WPLConfig(fisher_source=value)


def test_fisher_source_round_trips_inside_task_configs():
    from wpl_keras.nas.spaces.cnn.task import CNNTaskConfig
    from wpl_keras.nas.spaces.rnn.config import RNNSupernetConfig

    wpl = WPLConfig(fisher_source="valid")
    for kind in (RNNSupernetConfig, CNNTaskConfig):
        config = kind(wpl=wpl)
        assert config.to_json()["wpl"]["fisher_source"] == "valid"
        back = kind.from_json(json.dumps(config.to_json()))
        assert back.wpl == wpl and back.wpl.fisher_source == "valid"
        assert kind.from_json({"wpl": {}}).wpl.fisher_source == "train"
        with pytest.raises(ValueError, match="fisher_source"):
            kind.from_json({"wpl": {"fisher_source": "test"}})

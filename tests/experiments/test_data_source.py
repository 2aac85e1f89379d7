"""The data record of a run (data_source.json), its resolution for later stages, and the
apps' one-paragraph data errors."""

import json
import os

import pytest

from wpl_keras.experiments import data_source as ds


def test_record_round_trip_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("data")
    path = ds.save_data_source(str(tmp_path / "run"), "data", verify=False)
    assert json.load(open(path)) == {"data_dir": str(tmp_path / "data"), "verify": False}
    assert ds.load_data_source(str(tmp_path / "run")) == ds.DataSource(
        data_dir=str(tmp_path / "data"), verify=False)
    ds.save_data_source(str(tmp_path / "dl"), None)
    assert ds.load_data_source(str(tmp_path / "dl")) == ds.DataSource(None, True)
    assert ds.load_data_source(str(tmp_path / "none")) is None


def test_resolution_order(tmp_path):
    run = str(tmp_path / "run")
    # Nothing recorded: the default folder (e.g. from WPL_DATA_DIR) and verify on.
    assert ds.resolve_data_source(run, default_dir="/env/ptb") == ds.DataSource("/env/ptb", True)
    assert ds.resolve_data_source(run) == ds.DataSource(None, True)
    ds.save_data_source(run, "/recorded", verify=False)
    # The record wins over the default; explicit arguments win over the record, one by one.
    assert ds.resolve_data_source(run, default_dir="/env") == ds.DataSource("/recorded", False)
    assert ds.resolve_data_source(run, data_dir="/given") == ds.DataSource("/given", False)
    assert ds.resolve_data_source(run, verify=True) == ds.DataSource("/recorded", True)
    assert ds.resolve_data_source(run, data_dir="/g", verify=True) == ds.DataSource("/g", True)


@pytest.mark.parametrize("content", [
    "not json", "[]", "null", "{}", '{"data_dir": "/x"}', '{"data_dir": 3, "verify": true}',
    '{"data_dir": "/x", "verify": "no"}', '{"data_dir": "/x", "verify": true, "extra": 1}',
])
def test_malformed_record_is_an_error_naming_the_file(tmp_path, content):
    (tmp_path / ds.DATA_SOURCE_FILE).write_text(content)
    with pytest.raises(ds.DataSourceError, match="data_source.json|data_dir|verify"):
        ds.load_data_source(str(tmp_path))
    assert issubclass(ds.DataSourceError, ValueError)


def test_data_error_types_cover_every_loader():
    from wpl_keras.data import mnist

    types = ds.data_error_types()
    for cls in (mnist.MnistDataError, mnist.MnistDownloadError, ds.DataSourceError):
        assert cls in types
    from wpl_keras.data import cifar10, errors, ptb

    assert errors.DataError in types and errors.DataDownloadError in types
    assert errors.DataMissingError in types
    for module in (ptb, cifar10, mnist):  # each loader's own error classes
        own = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, Exception)
               and v.__module__ == module.__name__]
        assert own and all(cls in types for cls in own), module.__name__
    # Errors that are not about data (a missing derived.json, a bug) are not swallowed.
    assert not any(t in types for t in (ValueError, RuntimeError, Exception, FileNotFoundError))


def test_message_is_one_paragraph_with_the_files():
    error = RuntimeError("PTB download of ptb.train.txt failed:\n  URL fetch failure")
    text = ds.data_error_message("wpl-x", error, dataset="PTB", files="train.txt and test.txt")
    assert "\n" not in text and text.startswith("wpl-x: could not load PTB: PTB download")
    assert "URL fetch failure" in text and "--data-dir DIR" in text
    assert "train.txt and test.txt" in text
    # An error that already points to --data-dir is not repeated.
    pointed = ds.data_error_message("wpl-x", RuntimeError("use --data-dir D"), dataset="PTB",
                                    files="F")
    assert pointed == "wpl-x: could not load PTB: use --data-dir D"

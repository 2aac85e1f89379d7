"""Where a run's data came from, recorded with the run, and the project's data errors.

A search run records its data location as ``DIR/data_source.json`` (:class:`DataSource`: the
absolute ``data_dir``, or ``null`` for the loader's download, and whether local files were
verified against their standard checksums). The later stages of a run (derive, train-best,
export) read it back with :func:`resolve_data_source`, so they load the same data as the search
did; an explicit ``data_dir`` / ``verify`` on a later stage overrides the record.

:func:`data_error_types` lists the exception classes that the loaders of :mod:`wpl_keras.data`
define (download failures, bad or missing files), and :func:`data_error_message` turns one of
them, or a missing file, into the one-paragraph message that the apps print.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
from typing import Optional, Tuple, Type

DATA_SOURCE_FILE = "data_source.json"

# The modules whose exception classes count as data errors: the shared base classes
# (``DataError``, ``DataDownloadError``) and each loader's own.
_DATA_MODULES = ("wpl_keras.data.errors", "wpl_keras.data.ptb", "wpl_keras.data.cifar10",
                 "wpl_keras.data.mnist")


class DataSourceError(ValueError):
    """A recorded ``data_source.json`` is unreadable or malformed."""


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The data of a run.

    Args:
        data_dir: the folder the data was read from (absolute), or None for the loader's
            download.
        verify: whether local files were checked against their standard checksums.
    """

    data_dir: Optional[str] = None
    verify: bool = True

    def __post_init__(self):
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise DataSourceError(f"data_dir must be a string or None, got {self.data_dir!r}.")
        if not isinstance(self.verify, bool):
            raise DataSourceError(f"verify must be true or false, got {self.verify!r}.")

    def to_json(self) -> dict:
        return {"data_dir": self.data_dir, "verify": self.verify}


def save_data_source(out_dir: str, data_dir: Optional[str], *, verify: bool = True) -> str:
    """Writes ``out_dir/data_source.json`` with ``data_dir`` made absolute; returns its path."""
    source = DataSource(data_dir=os.path.abspath(data_dir) if data_dir else None,
                        verify=bool(verify))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, DATA_SOURCE_FILE)
    with open(path, "w") as f:
        json.dump(source.to_json(), f, indent=1)
    return path


def load_data_source(out_dir: str) -> Optional[DataSource]:
    """The :class:`DataSource` recorded in ``out_dir``, or None when there is none.

    Raises:
        DataSourceError: the file is not a JSON object with ``data_dir`` and ``verify``.
    """
    path = os.path.join(out_dir, DATA_SOURCE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as error:
        raise DataSourceError(f"{path} is not readable JSON ({error}); delete it and pass "
                              "--data-dir.") from error
    if not isinstance(obj, dict) or set(obj) != {"data_dir", "verify"}:
        raise DataSourceError(f"{path} must be an object with exactly 'data_dir' and 'verify', "
                              f"got {obj!r}; delete it and pass --data-dir.")
    return DataSource(data_dir=obj["data_dir"], verify=obj["verify"])


def resolve_data_source(
    out_dir: str,
    *,
    data_dir: Optional[str] = None,
    verify: Optional[bool] = None,
    default_dir: Optional[str] = None,
) -> DataSource:
    """The data of a stage run in ``out_dir``.

    Each field is taken from the first of: the explicit argument (``data_dir``, ``verify``);
    the run's record (:func:`load_data_source`); the default (``default_dir``, e.g. from an
    environment variable, and ``verify=True``).
    """
    recorded = load_data_source(out_dir) or DataSource(data_dir=default_dir)
    return DataSource(
        data_dir=data_dir if data_dir else recorded.data_dir,
        verify=recorded.verify if verify is None else bool(verify),
    )


def data_error_types() -> Tuple[Type[BaseException], ...]:
    """The exception classes defined by the data loaders (download failures, missing or bad
    files), plus :class:`DataSourceError`."""
    found = [DataSourceError]
    for name in _DATA_MODULES:
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (issubclass(value, Exception) and value.__module__.startswith("wpl_keras.data")
                    and value not in found):
                found.append(value)
    return tuple(found)


def data_error_message(prog: str, error: BaseException, *, dataset: str, files: str) -> str:
    """One paragraph: what failed (``error``'s own message) and what ``--data-dir`` needs
    (left out when the error's message already names ``--data-dir``).

    Args:
        prog: the app's name, first in the message.
        error: the loader's exception.
        dataset: the dataset's name (``"PTB"``).
        files: the files a ``--data-dir`` folder must hold.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    message = f"{prog}: could not load {dataset}: {text}"
    if "--data-dir" in text:
        return message
    return (f"{message} To use local files, pass --data-dir DIR (or set WPL_DATA_DIR), where "
            f"DIR holds {files}.")

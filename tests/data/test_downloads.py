"""The real download paths (tensorflow-datasets for MNIST and CIFAR-10, ``keras.utils.get_file``
for PTB), driven offline up to the point where they open the network.

The network is cut at its lowest level, the name lookup (``socket.getaddrinfo``), which both
``requests`` (tensorflow-datasets) and ``urllib`` (keras) call before connecting; a direct
connect is refused as well. Everything above it runs for real, so a module missing anywhere on
a download path (such as tfds' ``importlib_resources``) fails these tests: the loader would
stop before the network and no host would be looked up.
"""

import socket

import pytest
import urllib3

from wpl_keras.data import cifar10, mnist, ptb
from wpl_keras.data.errors import DataDownloadError


@pytest.fixture
def network(monkeypatch):
    """Records every host a download looks up and fails the lookup as an offline machine does."""
    hosts = []

    def lookup(host, port, *args, **kwargs):
        hosts.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    def connect(self, address):
        hosts.append(address)
        raise OSError("the network is cut in this test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    # requests (inside tfds) retries a failed connection with backoff; no waiting here.
    monkeypatch.setattr(urllib3.util.retry.Retry, "get_backoff_time", lambda self: 0.0)
    return hosts


def _causes(error):
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _assert_reached_network(info, hosts, host):
    chain = _causes(info.value)
    missing = [e for e in chain if isinstance(e, ImportError)]
    assert not missing, f"the download path stops before the network: {missing[0]!r}"
    assert host in hosts, f"no lookup of {host}; looked up {hosts}; error: {info.value}"
    assert any(isinstance(e, OSError) for e in chain[1:]), chain


def test_mnist_tfds_download_reaches_the_network(network, tmp_path):
    with pytest.raises(mnist.MnistDownloadError) as info:
        mnist.load_mnist(None, tfds_dir=str(tmp_path / "tfds"))
    _assert_reached_network(info, network, "storage.googleapis.com")
    message = str(info.value)
    assert "could not download MNIST" in message and "--data-dir" in message
    for filename in mnist.MNIST_FILES.values():
        assert filename in message


def test_ptb_get_file_download_reaches_the_network(network, tmp_path):
    with pytest.raises(ptb.PTBDownloadError) as info:
        ptb.load_ptb(None, cache_dir=str(tmp_path / "keras"))
    _assert_reached_network(info, network, "raw.githubusercontent.com")
    message = str(info.value)
    assert "ptb.train.txt" in message and "raw.githubusercontent.com" in message
    assert "--data-dir" in message and "train.txt, valid.txt and test.txt" in message
    assert "URL fetch failure" in message  # keras' own message, kept as the reason


def test_cifar10_tfds_download_reaches_the_network(network, tmp_path):
    with pytest.raises(cifar10.CIFAR10DownloadError) as info:
        cifar10.load_cifar10(None, tfds_dir=str(tmp_path / "tfds"))
    _assert_reached_network(info, network, "www.cs.toronto.edu")
    message = str(info.value)
    assert "could not download CIFAR-10" in message and "--data-dir" in message
    assert "cifar-10-python.tar.gz" in message and "cifar10-jpeg-train.tar.gz" in message


def test_download_errors_share_one_type():
    for error_type in (mnist.MnistDownloadError, ptb.PTBDownloadError,
                       cifar10.CIFAR10DownloadError):
        assert issubclass(error_type, DataDownloadError)
        assert issubclass(error_type, RuntimeError)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_missing_module_is_named_not_blamed_on_the_network(dataset, monkeypatch):
    def broken(tfds_dir):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    if dataset == "mnist":
        monkeypatch.setattr(mnist, "_tfds_load_mnist", broken)
        expected, load = mnist.MnistDownloadError, lambda: mnist.load_mnist(None)
    else:
        monkeypatch.setattr(cifar10, "_tfds_load_cifar10", broken)
        expected, load = cifar10.CIFAR10DownloadError, lambda: cifar10.load_cifar10(None)
    with pytest.raises(expected) as info:
        load()
    message = str(info.value)
    assert "module the download needs is missing" in message
    assert "importlib_resources" in message and "pip install -e ." in message
    assert "--data-dir" in message

"""Tests for the report of what a server of this process really listens on."""

import re
import socket

import pytest

from wpl_keras.utils.listening import ListeningSocket, describe_server, listening_sockets


def test_a_loopback_socket_is_found_and_needs_no_warning():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert listening_sockets(port) == []  # bound, not listening
        server.listen()
        assert listening_sockets(port) == [ListeningSocket("127.0.0.1", port, ipv6=False)]
        line, warning = describe_server("test server", f"127.0.0.1:{port}")
        assert line == f"test server listening on 127.0.0.1:{port} (loopback only)"
        assert warning is None
        with socket.create_connection(("127.0.0.1", port)):  # the query left it working
            pass
    assert listening_sockets(port) == []


@pytest.mark.parametrize("sockets, scope, honoured", [
    ([ListeningSocket("::", 2222, ipv6=True, dual_stack=True)],
     r"\[::\]:2222 \(every interface, IPv4 and IPv6\)", False),
    ([ListeningSocket("::", 2222, ipv6=True)], r"\[::\]:2222 \(every IPv6 interface\)", False),
    ([ListeningSocket("0.0.0.0", 2222, ipv6=False)], r"0\.0\.0\.0:2222 \(every IPv4 interface\)",
     False),
    ([ListeningSocket("10.0.0.5", 2222, ipv6=False)],
     r"10\.0\.0\.5:2222 \(the interface of 10\.0\.0\.5\)", True),
])
def test_a_socket_open_beyond_loopback_is_named_and_warned_about(sockets, scope, honoured):
    requested = "10.0.0.5:2222"
    line, warning = describe_server("ps", requested, sockets)
    assert line.startswith("ps listening on ")
    assert re.search(scope, line), line
    assert ("cannot bind one address" in line) is not honoured
    assert "no authentication" in warning and "any TensorFlow op" in warning
    assert "port 2222" in warning and "firewall" in warning


def test_a_wildcard_request_served_on_the_wildcard_is_honoured():
    line, _ = describe_server("ps", "0.0.0.0:2222",
                              [ListeningSocket("::", 2222, ipv6=True, dual_stack=True)])
    assert "cannot bind" not in line


def test_no_socket_found_says_so_and_what_tensorflow_binds():
    line, warning = describe_server("ps", "127.0.0.1:2222", [])
    assert "could not be read" in line and "0.0.0.0 and ::" in line
    assert warning is not None

"""What a TensorFlow gRPC server started in this process really listens on, in words.

TensorFlow's gRPC server (``tf.distribute.Server``, and the one that
``tf.config.experimental_connect_to_cluster`` and ``MultiWorkerMirroredStrategy`` start for
this process's task) binds the wildcard address ``0.0.0.0:<port>``, which gRPC opens as one
dual-stack IPv6 socket ``[::]:<port>``: every interface, IPv4 and IPv6, whatever host the
cluster spec names (``GrpcServer::Init`` in TensorFlow's ``grpc_server_lib.cc``; no
``ServerDef`` field, option or environment variable chooses the address). The server has no
authentication: whoever reaches the port can run any TensorFlow op in this process, file
reads and writes included.

:func:`listening_sockets` reads the sockets this process really listens on (each file
descriptor of ``/proc/self/fd``, or ``/dev/fd``, that is a listening TCP socket on the port),
and :func:`describe_server` turns them into the line a program prints and, where the socket
admits more than the loopback interface, the warning it prints, so that what is printed is
what is listening.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from typing import List, Optional, Tuple

#: Where the README says who can reach these servers and how to confine them.
README_SECTION = "README.md, 'Who can reach the distributed servers'"


@dataclasses.dataclass(frozen=True)
class ListeningSocket:
    """One listening TCP socket: its bound ``host`` and ``port``, and for an IPv6 socket
    whether it also accepts IPv4 (``dual_stack``: ``IPV6_V6ONLY`` off)."""

    host: str
    port: int
    ipv6: bool
    dual_stack: bool = False

    @property
    def address(self) -> str:
        """``host:port``, an IPv6 host in brackets (``[::]:2222``)."""
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can connect (a loopback address)."""
        return ipaddress.ip_address(self.host).is_loopback

    def scope(self) -> str:
        """Who can connect, in words."""
        ip = ipaddress.ip_address(self.host)
        if ip.is_unspecified:
            if self.ipv6 and self.dual_stack:
                return "every interface, IPv4 and IPv6"
            return "every IPv6 interface" if self.ipv6 else "every IPv4 interface"
        if ip.is_loopback:
            return "loopback only"
        return f"the interface of {self.host}"


def listening_sockets(port: int) -> List[ListeningSocket]:
    """The TCP sockets of this process that listen on ``port``, read from its open file
    descriptors (``/proc/self/fd`` on Linux, ``/dev/fd`` elsewhere); empty where neither
    exists. Each descriptor is duplicated for the query and the duplicate closed, so the
    server's socket is not touched."""
    folder = next((d for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)), None)
    if folder is None:
        return []
    found = []
    for name in os.listdir(folder):
        try:
            dup = os.dup(int(name))
        except (OSError, ValueError):
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            entry = _listening(sock, port)
        if entry is not None and entry not in found:
            found.append(entry)
    return found


def _listening(sock: socket.socket, port: int) -> Optional[ListeningSocket]:
    """``sock`` as a :class:`ListeningSocket` if it is a TCP socket listening on ``port``."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None
        host, bound = sock.getsockname()[:2]
    except OSError:
        return None
    if bound != port:
        return None
    ipv6 = sock.family == socket.AF_INET6
    dual = ipv6 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    return ListeningSocket(host=host.split("%")[0], port=port, ipv6=ipv6, dual_stack=dual)


def describe_server(what: str, requested: str,
                    sockets: Optional[List[ListeningSocket]] = None) -> Tuple[str, Optional[str]]:
    """The line to print for a server of this process asked to serve at ``requested``
    (``host:port``), and a warning, or None when it listens on loopback only.

    The line names the sockets that listen on the port and who can connect to them, e.g.
    ``"<what> listening on [::]:2222 (every interface, IPv4 and IPv6; asked for
    127.0.0.1:2222: TensorFlow's gRPC server cannot bind one address)"``.

    Args:
        what: the server, e.g. ``"parameter server /job:ps/task:0"``.
        requested: the ``host:port`` of the cluster spec (what clients dial).
        sockets: the listening sockets (default: :func:`listening_sockets` of the port).
    """
    host, _, port = requested.rpartition(":")
    port = int(port)
    sockets = listening_sockets(port) if sockets is None else sockets
    if not sockets:
        return (f"{what} serving at {requested} (its listening socket could not be read here; "
                "TensorFlow's gRPC server binds every interface, 0.0.0.0 and ::, port "
                f"{port})", _warning(port))
    where = ", ".join(f"{s.address} ({s.scope()})" for s in sockets)
    line = f"{what} listening on {where}"
    honoured = all(s.host == host.strip("[]") or (_wildcard(host) and _wildcard(s.host))
                   for s in sockets)
    if not honoured:
        line += (f"; asked for {requested}: TensorFlow's gRPC server cannot bind one address, "
                 f"clients dial {requested}")
    if all(s.loopback_only for s in sockets):
        return line, None
    return line, _warning(port)


def _wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a host name
        return False


def _warning(port: int) -> str:
    return (f"WARNING: port {port} is open to every machine that can reach this one. "
            "TensorFlow's gRPC server has no authentication and runs any TensorFlow op a "
            "client sends, file reads and writes included. Run it only on a private network, "
            f"or admit only the cluster's machines to port {port} with a firewall "
            f"({README_SECTION}).")

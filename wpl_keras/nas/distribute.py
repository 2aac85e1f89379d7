"""Choosing the ``tf.distribute`` strategy every training loop runs under.

``make_strategy(kind)``:

* ``"default"``: the default strategy (one device, no replicas);
* ``"mirrored"``: ``MirroredStrategy`` over ``devices`` or all local GPUs (all local logical
  CPUs when there is no GPU and more than one logical CPU is configured);
* ``"multi_worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from the
  ``TF_CONFIG`` environment variable (``{"cluster": {"worker": [...]}, "task": {...}}``);
* ``"auto"``: ``multi_worker`` when ``TF_CONFIG`` names more than one worker, else
  ``mirrored`` when more than one GPU is visible, else ``default``.

Strategies must be created before any op runs (TensorFlow initialises its devices once);
:func:`split_cpu` (logical CPU devices, for tests and benchmarks on CPU) likewise.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Optional, Sequence

import tensorflow as tf

KINDS = ("auto", "default", "mirrored", "multi_worker")


def tf_config_workers(environ: Optional[dict] = None) -> int:
    """Number of workers listed in ``TF_CONFIG`` (0 when unset).

    Raises:
        ValueError: if ``TF_CONFIG`` is not valid JSON.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text:
        return 0
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return len(config.get("cluster", {}).get("worker", []))


def resolve_kind(kind: str = "auto", environ: Optional[dict] = None) -> str:
    """``kind`` with ``"auto"`` resolved (see module docstring).

    Raises:
        ValueError: for an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown strategy {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind != "auto":
        return kind
    if tf_config_workers(environ) > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(
    kind: str = "auto", devices: Optional[Sequence[str]] = None
) -> tf.distribute.Strategy:
    """Creates the strategy named by ``kind`` (see module docstring).

    Raises:
        ValueError: for an unknown kind, or ``multi_worker`` without ``TF_CONFIG``.
    """
    kind = resolve_kind(kind)
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            cpus = tf.config.list_logical_devices("CPU")
            if gpus:
                devices = [d.name for d in gpus]
            elif len(cpus) > 1:
                devices = [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    if tf_config_workers() < 1:
        raise ValueError(
            "multi_worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into ``num_devices`` logical devices (before TF initialises).

    Raises:
        RuntimeError: if TensorFlow has already initialised its devices.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            "split_cpu must run before TensorFlow initialises its devices (before any op); "
            "run it first in a fresh process."
        ) from error


def free_ports(count: int) -> list:
    """``count`` free TCP ports on 127.0.0.1 (for a local multi-worker ``TF_CONFIG``)."""
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def local_tf_config(ports: Sequence[int], index: int) -> str:
    """``TF_CONFIG`` JSON for worker ``index`` of a cluster on 127.0.0.1 ``ports``."""
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": int(index)},
        }
    )

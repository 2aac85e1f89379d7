"""Choosing the ``tf.distribute`` strategy every training loop runs under.

``make_strategy(kind)``:

* ``"default"``: the default strategy (one device, no replicas);
* ``"mirrored"``: ``MirroredStrategy`` over ``devices`` or all local GPUs (all local logical
  CPUs when there is no GPU and more than one logical CPU is configured); one instance per
  device set and process (:func:`_mirrored_strategy` says why);
* ``"multi_worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from the
  ``TF_CONFIG`` environment variable (``{"cluster": {"worker": [...]}, "task": {...}}``);
* ``"auto"``: ``multi_worker`` when ``TF_CONFIG`` names more than one worker, else
  ``mirrored`` when more than one GPU is visible, else ``default``.

Strategies must be created before any op runs (TensorFlow initialises its devices once);
:func:`split_cpu` (logical CPU devices, for tests and benchmarks on CPU) likewise.

Under ``multi_worker`` every worker runs the same program; :func:`is_chief` says which one is
the chief (the task of type ``"chief"``, else worker 0; any process that is not a multi-worker
task), and :func:`worker_out_dir` gives each process where it writes: the chief the requested
folder, every other worker a private folder ``out_dir/workers/<type>_<index>`` (so workers on
one shared file system never write the same file). :func:`task_strategy` is the strategy a
task runs under, and :func:`agreed_signal` lets every worker stop at the same point when any
of them got SIGINT/SIGTERM.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from wpl_keras.utils.listening import describe_server
from wpl_keras.utils.validation import check_number

KINDS = ("auto", "default", "mirrored", "multi_worker")


def tf_config_workers(environ: Optional[dict] = None) -> int:
    """Number of workers listed in ``TF_CONFIG`` (0 when unset).

    Raises:
        ValueError: if ``TF_CONFIG`` is not valid JSON.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    return len(_parse_tf_config(text).get("cluster", {}).get("worker", []))


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


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: Optional[Tuple[str, ...]]) -> tf.distribute.MirroredStrategy:
    """The one ``MirroredStrategy`` of this process over ``devices`` (None: TensorFlow's
    choice).

    Every new ``MirroredStrategy`` numbers the group and instance keys of its collective ops
    from the same start, and TensorFlow keeps what it resolved for each (group, instance) for
    the life of the process. A second strategy over the same devices therefore reuses the
    first one's keys, and its first all-reduce whose shape differs from the first strategy's
    at the same key fails ("Shape mismatch in the collective instance"), e.g. a second,
    differently sized supernet with synchronised BatchNorm trained in the same process. One
    strategy per device set keeps counting, so every task gets fresh keys."""
    return tf.distribute.MirroredStrategy(devices=None if devices is None else list(devices))


def make_strategy(
    kind: str = "auto", devices: Optional[Sequence[str]] = None
) -> tf.distribute.Strategy:
    """Creates the strategy named by ``kind`` (see module docstring).

    A ``multi_worker`` strategy starts this worker's TensorFlow gRPC server at its
    ``TF_CONFIG`` address; that server listens on every interface whatever host the address
    names, has no authentication and runs any TensorFlow op a client sends. Where it really
    listens, and (unless loopback only) a warning that names the fix, go to stderr
    (:func:`~wpl_keras.utils.listening.describe_server`).

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
        return _mirrored_strategy(None if devices is None else tuple(devices))
    if tf_config_workers() < 1:
        raise ValueError(
            "multi_worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    task_type, index, cluster = task_of(strategy)
    tasks = cluster.get(task_type) or []
    address = tasks.get(index) if isinstance(tasks, Mapping) else (
        tasks[index] if index < len(tasks) else None)
    if address:
        for text in describe_server(f"multi-worker task /job:{task_type}/task:{index}", address):
            if text:
                print(text, file=sys.stderr, flush=True)
    return strategy


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into ``num_devices`` logical devices (before TF initialises).

    Raises:
        RuntimeError: if TensorFlow has already initialised its devices.
    """
    num_devices = check_number("split_cpu: num_devices", num_devices, minimum=1, integer=True)
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


TaskSource = Union[None, str, Mapping[str, Any], tf.distribute.Strategy]


def _parse_tf_config(source: Union[None, str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """The ``TF_CONFIG`` dict of ``source``: a parsed dict, its JSON text, or (None) the
    ``TF_CONFIG`` environment variable; ``{}`` when unset or empty."""
    if isinstance(source, Mapping):
        return source
    text = os.environ.get("TF_CONFIG", "") if source is None else source
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error


def task_of(source: TaskSource = None) -> Tuple[Optional[str], int, Mapping[str, Any]]:
    """``(task type, task index, cluster)`` of this process.

    Args:
        source: a strategy (its cluster resolver when it is a multi-worker strategy; any other
            strategy runs in one process: ``(None, 0, {})``), a ``TF_CONFIG`` dict or JSON
            text, or None for the ``TF_CONFIG`` environment variable.

    Raises:
        ValueError: if ``TF_CONFIG`` is not valid JSON.
    """
    if isinstance(source, tf.distribute.Strategy):
        resolver = getattr(source, "cluster_resolver", None)
        if not isinstance(source, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
            return None, 0, {}
        cluster = resolver.cluster_spec().as_dict()
        return resolver.task_type, int(resolver.task_id or 0), cluster
    config = _parse_tf_config(source)
    task = config.get("task", {})
    return task.get("type"), int(task.get("index", 0)), config.get("cluster", {})


def is_chief(source: TaskSource = None) -> bool:
    """Whether this process is the chief: task type ``"chief"``; or ``"worker"`` with index 0
    when the cluster has no chief task; or no multi-worker task at all (``source`` as in
    :func:`task_of`)."""
    task_type, index, cluster = task_of(source)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and not cluster.get("chief")


def worker_out_dir(out_dir: str, source: TaskSource = None) -> str:
    """Where this process writes the output meant for ``out_dir``: ``out_dir`` itself on the
    chief (:func:`is_chief`), ``out_dir/workers/<type>_<index>`` on every other task."""
    if is_chief(source):
        return out_dir
    task_type, index, _ = task_of(source)
    return os.path.join(out_dir, "workers", f"{task_type}_{index}")


def task_strategy(task) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``task`` runs under: its ``strategy`` attribute, else the
    current strategy (one process)."""
    strategy = getattr(task, "strategy", None)
    return strategy if strategy is not None else tf.distribute.get_strategy()


def agreed_signal(strategy: tf.distribute.Strategy, pending: Optional[int]) -> Optional[int]:
    """The signal every worker acts on: ``pending`` in one process; under a
    ``MultiWorkerMirroredStrategy`` the flags ``[SIGINT pending, SIGTERM pending]`` summed
    over the replicas of all workers (a collective every worker must reach), giving SIGINT if
    any worker has one pending, else SIGTERM if any has, else None."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return pending
    flags = [float(pending == signal.SIGINT), float(pending == signal.SIGTERM)]
    local = strategy.run(lambda: tf.constant(flags))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None).numpy()
    if total[0] > 0:
        return signal.SIGINT
    return signal.SIGTERM if total[1] > 0 else None

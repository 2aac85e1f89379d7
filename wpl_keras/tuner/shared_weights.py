"""One supernet shared by the workers of a distributed KerasTuner search, on a parameter server.

KerasTuner's distributed mode runs one chief (the oracle, over gRPC) and workers that each run
their own Python trial loop. :class:`SharedWeightStore` lets those workers train ONE supernet:
the authoritative copy of the shared state (supernet weights, optimizer slots, WPL Fisher and
anchors) lives in resource variables on a parameter-server task of TensorFlow's distributed
runtime, and every trial works on a local copy:

* **pull** (trial start): ``θ_local ← θ_ps`` and ``θ_pulled ← θ_ps`` for every shared variable;
* the trial trains ``θ_local`` exactly as without sharing;
* **push** (trial end): ``θ_ps ← θ_ps + (θ_local − θ_pulled)`` with ``AssignAddVariableOp``,
  then ``trials_ps ← trials_ps + 1``.

The push is the classic parameter-server delta: each addition is atomic on the server, so
concurrent workers never overwrite each other's trials; their deltas add up (as in
asynchronous SGD). A worker alone reproduces sequential training exactly
(``θ_ps = θ_local`` after each push, up to one float rounding of ``pulled + delta``). A worker
killed mid-trial pushes nothing: the server keeps every completed trial and the other workers
carry on; the oracle retries the trial (see ``trial_timeout`` of the controller oracle).

Why this design. The parameter server is a plain ``tf.distribute.Server`` started by
:func:`serve_parameter_server` (``python -m wpl_keras.tuner.shared_weights --ps HOST:PORT``).
Each worker connects with ``tf.config.experimental_connect_to_cluster`` to a cluster that
holds only the ps task and the worker itself under the job name ``tuner`` (so workers need not
know each other). Connecting replaces the process's eager context, so a worker connects
BEFORE it builds its task: variables created earlier live on ``/job:localhost``, which no
longer exists (under the job name ``localhost`` they would keep working for reads and
``assign_add`` but silently drop plain ``assign``s; under ``tuner`` they fail loudly, and
:meth:`SharedWeightStore.attach` turns that failure into an error that names the fix). The
shared variables are created on ``/job:ps/task:0`` by ``VarHandleOp`` with a ``shared_name``:
the server's resource manager is shared by all eager client contexts (the session config's
``isolate_session_state`` defaults to False), so every worker addresses the same variables by
name, and they outlive the worker that created them. The alternatives fit
KerasTuner less well: ``ParameterServerStrategy`` needs ONE coordinator that owns the
variables and dispatches steps to workers, while KerasTuner's workers each run their own loop
and fetch trials from the oracle; a cluster started by the chief would tie the oracle to
TensorFlow's runtime and to a fixed worker list, while KerasTuner workers come and go.

Initialisation. The first worker to attach a namespace initialises its variables from its
local values; the others wait for the namespace's ``ready`` flag and then pull. The choice is
made under a ticket lock on the server (``ResourceCountUpTo`` hands out tickets atomically;
the holder of ticket ``t`` enters when ``now_serving == t``); the lock variables are created
by :func:`serve_parameter_server`, which is why the ps must be started through it.

Limits: the server keeps its variables in memory only (restarting it loses them, and the
connected workers' next pull fails: restart them too; the first to attach initialises the
namespace from its task, e.g. as restored from its own checkpoint); a push is dense (a trial that
changed a few rows still sends whole tensors); a worker killed while it attaches (holding or
waiting for the initialisation lock) blocks later attaches until the ps restarts (they fail
after ``init_timeout`` with an error that says so); the chief does not connect.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import socket
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from wpl_keras.utils.listening import describe_server
from wpl_keras.utils.validation import check_number

DEFAULT_CONTAINER = "wpl_keras"
PS_JOB = "ps"
PS_DEVICE = "/job:ps/replica:0/task:0/device:CPU:0"
LOCAL_JOB = "tuner"
_TICKET = "lock/next_ticket"
_SERVING = "lock/now_serving"
_TICKET_LIMIT = 2**62

_connected_to: Optional[str] = None  # the ps address this process is connected to


@dataclasses.dataclass(frozen=True)
class SyncRecord:
    """What a pull or a push saw.

    Attributes:
        trials: the shared trial counter (pushed trials of all workers) read at that moment.
        checksum: ``Σ_v Σ_i v_i`` (float64) of the local shared variables right after the
            operation: the pulled values for a pull, the pushed ``θ_local`` for a push.
        delta_checksum: ``Σ_v Σ_i (θ_local − θ_pulled)_i`` of a push (0 for a pull).
    """

    trials: int
    checksum: float
    delta_checksum: float = 0.0


def parse_address(address: str) -> Tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; errors name the address and the expected form."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be 'host:port' with a port in 1..65535, got {address!r}.")
    return host, int(port)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _handle(name: str, dtype: tf.DType, shape, container: str) -> tf.Tensor:
    """A resource handle of the variable ``shared_name=name`` on the parameter server."""
    with tf.device(PS_DEVICE):
        return tf.raw_ops.VarHandleOp(
            dtype=dtype, shape=shape, container=container, shared_name=name
        )


def _read(handle: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    with tf.device(PS_DEVICE):
        return tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype)


def _is_initialized(handle: tf.Tensor) -> bool:
    with tf.device(PS_DEVICE):
        return bool(tf.raw_ops.VarIsInitializedOp(resource=handle).numpy())


def serve_parameter_server(
    address: str, *, container: str = DEFAULT_CONTAINER, block: bool = True
) -> None:
    """Runs the parameter-server task ``/job:ps/task:0`` at ``address`` (``host:port``).

    Starts a ``tf.distribute.Server`` for the cluster ``{"ps": [address]}`` (through
    ``experimental_connect_to_cluster``, so this process can create the ticket-lock variables
    ``next_ticket = now_serving = 0`` that :class:`SharedWeightStore` needs), then serves
    until killed (``block=False`` returns after starting, for in-process use).

    It prints the sockets the server really listens on
    (:func:`~wpl_keras.utils.listening.describe_server`): TensorFlow's gRPC server binds every
    interface, IPv4 and IPv6, whatever host ``address`` names, so ``127.0.0.1:2222`` serves
    ``[::]:2222``; clients still dial ``address``. Unless it listens on loopback only, a
    warning on stderr says that the server has no authentication and runs any TensorFlow op a
    client sends, and how to confine the port.
    """
    global _connected_to
    parse_address(address)
    cluster = tf.train.ClusterSpec({PS_JOB: [address]})
    tf.config.experimental_connect_to_cluster(cluster, job_name=PS_JOB, task_index=0)
    _connected_to = address
    for name in (_TICKET, _SERVING):
        handle = _handle(name, tf.int64, [], container)
        if not _is_initialized(handle):
            with tf.device(PS_DEVICE):
                tf.raw_ops.AssignVariableOp(resource=handle, value=tf.constant(0, tf.int64))
    line, warning = describe_server(f"parameter server /job:{PS_JOB}/task:0", address)
    print(line, flush=True)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    while block:
        time.sleep(3600)


def _as_tf_variable(variable) -> Optional[tf.Variable]:
    """The ``tf.Variable`` behind a tf or Keras (TF backend) variable, else None."""
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "value", None)
    return inner if isinstance(inner, tf.Variable) else None


def shared_task_variables(task) -> List[tf.Variable]:
    """The state of a :class:`~wpl_keras.nas.base.SharedWeightsTask` that workers share.

    Every floating-point variable of rank ≥ 1 of ``task.supernet``, ``task.optimizer`` and
    ``task.wpl_state`` (those present and not None): the weights, the optimizer slots
    (momentum, velocity), the Fisher and the anchors. Scalars stay local: step counters,
    learning rates and the WPL ``strength``, which each worker sets from its own schedule and
    whose deltas would add up across workers; so do integer data positions.
    """
    found: List[tf.Variable] = []
    seen = set()
    for attribute in ("supernet", "optimizer", "wpl_state"):
        owner = getattr(task, attribute, None)
        for variable in getattr(owner, "variables", None) or ():
            variable = _as_tf_variable(variable)
            if variable is None or id(variable) in seen:
                continue
            if variable.dtype.is_floating and variable.shape.rank:
                seen.add(id(variable))
                found.append(variable)
    if not found:
        raise ValueError(
            f"{type(task).__name__} has no floating-point variables of rank >= 1 in supernet, "
            "optimizer or wpl_state; pass them explicitly: store.attach(variables)."
        )
    return found


def _checksum(tensors: Sequence[tf.Tensor]) -> float:
    return float(sum(tf.reduce_sum(tf.cast(t, tf.float64)).numpy() for t in tensors))


class SharedWeightStore:
    """Variables of one supernet shared by tuner workers through a parameter server.

    Typical use on a worker (the chief needs none)::

        store = SharedWeightStore(os.environ["WPL_KERAS_PS_ADDRESS"])
        store.connect()           # before the task: connecting replaces the eager context
        task = make_task()
        tuner = WeightSharingTuner(oracle, task, shared_weights=store, ...)

    The tuner attaches ``shared_task_variables(task)`` before its first trial, pulls at the
    start of every trial and pushes at its end (see the module docstring for the formulas).

    Args:
        ps_address: ``host:port`` of the parameter server (:func:`serve_parameter_server`).
        namespace: name prefix of the shared variables; searches that share one ps use
            different namespaces.
        local_address: ``host:port`` this worker's TensorFlow server listens on (the ps must
            reach it); default: a free port on 127.0.0.1 for a loopback ps, else on this
            machine's fully qualified name.
        container: resource container on the ps (as given to :func:`serve_parameter_server`).
        init_timeout: seconds to wait for the initialisation lock and for another worker's
            initialisation before failing.
    """

    def __init__(
        self,
        ps_address: str,
        *,
        namespace: str = "supernet",
        local_address: Optional[str] = None,
        container: str = DEFAULT_CONTAINER,
        init_timeout: float = 300.0,
    ):
        parse_address(ps_address)
        if local_address is not None:
            parse_address(local_address)
        if not namespace or "lock/" in namespace:
            raise ValueError(
                f"namespace must be non-empty and not use 'lock/', got {namespace!r}."
            )
        init_timeout = check_number("SharedWeightStore init_timeout (seconds)", init_timeout,
                                    minimum=0, exclusive_minimum=True)
        self.ps_address = ps_address
        self.namespace = namespace
        self.local_address = local_address
        self.container = container
        self.init_timeout = float(init_timeout)
        self.variables: List[tf.Variable] = []
        self._handles: List[tf.Tensor] = []
        self._pulled: List[tf.Tensor] = []
        self.initialized_here = False
        self.last_pull: Optional[SyncRecord] = None
        self.last_push: Optional[SyncRecord] = None

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def connect(self) -> None:
        """Connects this process to the ps (once per process; the same ps for every store).

        Call it before creating the variables to share: it replaces the eager context, and
        variables created before it can no longer be used (see the module docstring). It
        starts this process's own TensorFlow gRPC server at ``local_address`` (default: a free
        port), which listens on every interface like the ps's; what it listens on, and a
        warning unless loopback only, go to stderr.
        """
        global _connected_to
        if _connected_to == self.ps_address:
            return
        if _connected_to is not None:
            raise RuntimeError(
                f"this process is already connected to the parameter server {_connected_to}; "
                f"one process serves one ps, got another store for {self.ps_address}."
            )
        ps_host, _ = parse_address(self.ps_address)
        local = self.local_address
        if local is None:
            host = "127.0.0.1" if ps_host in ("127.0.0.1", "localhost") else socket.getfqdn()
            local = f"{host}:{_free_port(host)}"
        cluster = tf.train.ClusterSpec({PS_JOB: [self.ps_address], LOCAL_JOB: [local]})
        tf.config.experimental_connect_to_cluster(cluster, job_name=LOCAL_JOB, task_index=0)
        _connected_to = self.ps_address
        # Connecting gives this process its own gRPC server (the ps sends results back to it),
        # started with the eager context by the first op: start it, say on stderr where it
        # really listens, and warn unless on loopback only.
        tf.constant(0)
        for text in describe_server(f"parameter-server client /job:{LOCAL_JOB}/task:0", local):
            if text:
                print(text, file=sys.stderr, flush=True)

    def _name(self, suffix: str) -> str:
        return f"{self.namespace}/{suffix}"

    def attach(self, variables: Sequence) -> SyncRecord:
        """Binds the local ``variables`` to the shared ones, initialising them if first.

        The first worker to attach the namespace writes its local values to the ps; every
        other worker checks that the shapes match and pulls. Returns the first pull's record.
        """
        if self.attached:
            raise RuntimeError(f"store {self.namespace!r} is already attached; attach once.")
        local = [_as_tf_variable(v) for v in variables]
        if not local or any(v is None for v in local):
            raise ValueError("attach needs a non-empty sequence of tf or Keras variables.")
        self.connect()
        try:
            return self._attach(local)
        except tf.errors.InvalidArgumentError as error:
            if "/job:localhost" not in str(error):
                raise
            self._handles = []
            raise RuntimeError(
                "the shared variables were created before this process connected to the "
                f"parameter server {self.ps_address}; call store.connect() first, then build "
                "the task (its variables must live on the connected context)."
            ) from error

    def _attach(self, local: List[tf.Variable]) -> SyncRecord:
        self.variables = local
        self._handles = [
            _handle(self._name(f"var{k}"), v.dtype, v.shape, self.container)
            for k, v in enumerate(local)
        ]
        self._counter = _handle(self._name("trials"), tf.int64, [], self.container)
        self._ready = _handle(self._name("ready"), tf.int64, [], self.container)
        self._count = _handle(self._name("num_variables"), tf.int64, [], self.container)
        with self._init_lock():
            if not _is_initialized(self._ready):
                self._initialise()
        self._wait_ready()
        self._check_layout()
        return self.pull()

    def _lock_handles(self) -> Tuple[tf.Tensor, tf.Tensor]:
        ticket = _handle(_TICKET, tf.int64, [], self.container)
        serving = _handle(_SERVING, tf.int64, [], self.container)
        if not (_is_initialized(ticket) and _is_initialized(serving)):
            raise RuntimeError(
                f"the parameter server at {self.ps_address} has no lock variables in container "
                f"{self.container!r}; start it with `python -m wpl_keras.tuner.shared_weights "
                f"--ps {self.ps_address}` (serve_parameter_server), not a bare tf Server."
            )
        return ticket, serving

    @contextlib.contextmanager
    def _init_lock(self) -> Iterator[None]:
        """Holds the ps's ticket lock (for initialisation only)."""
        _, serving = self._lock_handles()
        mine = int(_take_ticket(self.container).numpy())
        self._poll(lambda: int(_read(serving, tf.int64).numpy()) == mine,
                   f"the initialisation lock (ticket {mine})")
        try:
            yield
        finally:
            with tf.device(PS_DEVICE):
                tf.raw_ops.AssignAddVariableOp(resource=serving, value=tf.constant(1, tf.int64))
            _read(serving, tf.int64).numpy()  # waits until the release is applied

    def _poll(self, condition, what: str) -> None:
        deadline = time.monotonic() + self.init_timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {self.init_timeout:.0f} s for {what} on the parameter server at "
                    f"{self.ps_address}; a worker probably died while initialising "
                    f"{self.namespace!r}: restart the ps or use another namespace."
                )
            time.sleep(0.05)

    def _initialise(self) -> None:
        with tf.device(PS_DEVICE):
            for handle, variable in zip(self._handles, self.variables):
                tf.raw_ops.AssignVariableOp(resource=handle, value=variable.read_value())
            tf.raw_ops.AssignVariableOp(
                resource=self._count, value=tf.constant(len(self.variables), tf.int64)
            )
            tf.raw_ops.AssignVariableOp(resource=self._counter, value=tf.constant(0, tf.int64))
            tf.raw_ops.AssignVariableOp(resource=self._ready, value=tf.constant(1, tf.int64))
        _read(self._ready, tf.int64).numpy()  # waits until every assignment is applied
        self.initialized_here = True

    def _wait_ready(self) -> None:
        self._poll(lambda: _is_initialized(self._ready),
                   f"namespace {self.namespace!r} to be initialised by another worker")

    def _check_layout(self) -> None:
        count = int(_read(self._count, tf.int64).numpy())
        if count != len(self.variables):
            raise ValueError(
                f"namespace {self.namespace!r} on the ps holds {count} variables, this worker "
                f"shares {len(self.variables)}; build every worker's task with the same "
                "configuration, or use another namespace."
            )
        for k, (handle, variable) in enumerate(zip(self._handles, self.variables)):
            with tf.device(PS_DEVICE):
                shape = tf.raw_ops.VariableShape(input=handle).numpy().tolist()
            if shape != variable.shape.as_list():
                raise ValueError(
                    f"shared variable {k} ({variable.name}) has shape {shape} on the ps and "
                    f"{variable.shape.as_list()} here; build every worker's task with the same "
                    "configuration, or use another namespace."
                )

    def _require_attached(self, operation: str) -> None:
        if not self.attached:
            raise RuntimeError(f"{operation} needs an attached store: call attach(variables).")

    def trials(self) -> int:
        """The shared trial counter: trials pushed by all workers so far."""
        self._require_attached("trials()")
        return int(_read(self._counter, tf.int64).numpy())

    def pull(self) -> SyncRecord:
        """``θ_local ← θ_ps`` and ``θ_pulled ← θ_ps`` for every shared variable."""
        self._require_attached("pull()")
        trials = self.trials()
        self._pulled = []
        for handle, variable in zip(self._handles, self.variables):
            value = _read(handle, variable.dtype)
            with tf.device(variable.device):
                local = tf.identity(value)
                # The baseline gets its own buffer: an assignment may adopt ``local``'s buffer
                # and a later in-place update of the variable would then change the baseline.
                self._pulled.append(tf.raw_ops.DeepCopy(x=local))
            variable.assign(local)
        local_values = [v.read_value() for v in self.variables]  # what the task now holds
        self.last_pull = SyncRecord(trials=trials, checksum=_checksum(local_values))
        return self.last_pull

    def push(self) -> SyncRecord:
        """``θ_ps ← θ_ps + (θ_local − θ_pulled)`` per variable, then ``trials_ps += 1``."""
        self._require_attached("push()")
        if not self._pulled:
            raise RuntimeError("push() needs a pull() first (the delta is taken from it).")
        deltas = [v.read_value() - p for v, p in zip(self.variables, self._pulled)]
        with tf.device(PS_DEVICE):
            for handle, delta in zip(self._handles, deltas):
                tf.raw_ops.AssignAddVariableOp(resource=handle, value=delta)
            tf.raw_ops.AssignAddVariableOp(resource=self._counter, value=tf.constant(1, tf.int64))
        self._pulled = []
        self.last_push = SyncRecord(
            trials=self.trials(),
            checksum=_checksum([v.read_value() for v in self.variables]),
            delta_checksum=_checksum(deltas),
        )
        return self.last_push

    def checksum(self) -> float:
        """``Σ_v Σ_i v_i`` (float64) of the shared variables as the ps holds them now."""
        self._require_attached("checksum()")
        return _checksum([_read(h, v.dtype) for h, v in zip(self._handles, self.variables)])

    def describe(self) -> Dict[str, object]:
        """Address, namespace and variable count, for logs."""
        return {"ps_address": self.ps_address, "namespace": self.namespace,
                "num_variables": len(self.variables), "initialized_here": self.initialized_here}


def _take_ticket(container: str) -> tf.Tensor:
    """``next_ticket`` before an atomic ``next_ticket += 1`` on the ps (``ResourceCountUpTo``).

    Traced so that the handle carries its dtype and shape, which the op's shape function needs.
    """
    return _ticket_function(container)()


_TICKET_FUNCTIONS: Dict[str, object] = {}


def _ticket_function(container: str):
    if container not in _TICKET_FUNCTIONS:

        @tf.function
        def take():
            with tf.device(PS_DEVICE):
                handle = tf.raw_ops.VarHandleOp(
                    dtype=tf.int64, shape=[], container=container, shared_name=_TICKET
                )
                return tf.raw_ops.ResourceCountUpTo(
                    resource=handle, limit=_TICKET_LIMIT, T=tf.int64
                )

        _TICKET_FUNCTIONS[container] = take
    return _TICKET_FUNCTIONS[container]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m wpl_keras.tuner.shared_weights --ps HOST:PORT``: runs the ps task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ps", required=True, help="host:port this parameter server serves at")
    parser.add_argument("--container", default=DEFAULT_CONTAINER)
    args = parser.parse_args(argv)
    serve_parameter_server(args.ps, container=args.container)


if __name__ == "__main__":
    main()

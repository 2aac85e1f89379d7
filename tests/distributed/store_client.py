"""One client process of the SharedWeightStore protocol tests (not part of the package).

    python tests/distributed/store_client.py --ps HOST:PORT --mode first|second|bare --out FILE

``first``: attaches ``[v, w]`` (namespace ``t``), pushes one change, then tries a second
store over the same namespace with another layout (an error is expected). ``second``: a later
process with other local values attaches, checks that it pulled what ``first`` pushed, pushes
again, then attaches a variable it created before connecting (an error is expected).
``bare``: attaches against a plain ``tf.distribute.Server`` (an error is expected).
Writes what it saw as JSON to FILE.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from wpl_keras.tuner.shared_weights import SharedWeightStore  # noqa: E402


def _error(fn):
    try:
        fn()
    except (ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def first(address):
    store = SharedWeightStore(address, namespace="t", init_timeout=20.0)
    store.connect()
    v = tf.Variable([1.0, 2.0, 3.0])
    w = tf.Variable(tf.zeros([2, 2]))
    attach = store.attach([v, w])
    v.assign_add([0.5, 0.5, 0.5])
    w.assign([[1.0, 2.0], [3.0, 4.0]])
    push = store.push()
    other = SharedWeightStore(address, namespace="t", init_timeout=20.0)
    shape_error = _error(lambda: other.attach([tf.Variable([0.0, 0.0, 0.0]),
                                               tf.Variable(tf.zeros([3, 2]))]))
    count_error = _error(lambda: SharedWeightStore(address, namespace="t").attach([v]))
    return {"initialized_here": store.initialized_here, "attach_trials": attach.trials,
            "push": push.__dict__, "ps_checksum": store.checksum(),
            "shape_error": shape_error, "count_error": count_error}


def second(address):
    early = tf.Variable([1.0, 2.0, 3.0])  # created before connecting: unusable afterwards
    store = SharedWeightStore(address, namespace="t", init_timeout=20.0)
    store.connect()
    v = tf.Variable([7.0, 7.0, 7.0])
    w = tf.Variable(tf.ones([2, 2]))
    attach = store.attach([v, w])
    pulled = [v.numpy().tolist(), w.numpy().tolist()]
    v.assign_add([1.0, 1.0, 1.0])
    push = store.push()
    stale = SharedWeightStore(address, namespace="stale", init_timeout=20.0)
    return {"initialized_here": store.initialized_here, "attach_trials": attach.trials,
            "pulled": pulled, "push": push.__dict__, "ps_checksum": store.checksum(),
            "stale_error": _error(lambda: stale.attach([early])), "stale_attached": stale.attached}


def bare(address):
    store = SharedWeightStore(address, namespace="t", init_timeout=5.0)
    return {"error": _error(lambda: store.attach([tf.Variable([1.0])]))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ps", required=True)
    parser.add_argument("--mode", choices=["first", "second", "bare"], required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {"first": first, "second": second, "bare": bare}[args.mode](args.ps)
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

"""Serves SavedModel signatures through TensorFlow's session-based (TF1) loader, in a process
of its own: the path TensorFlow Serving's C++ server and ``saved_model_cli run`` take (restore
the variables through the SavedModel's saver, then run its init op, e.g. for lookup tables).

Tests call :func:`serve_in_session` with several cases; it runs this file once as a script::

    python tests/utils/session_loader.py CASES.json

``CASES.json`` lists ``{"dir", "signature", "inputs": {name: .npy path}, "outputs": .npz
path}``. Each case is loaded into a new ``tf.Graph`` and ``tf.compat.v1.Session`` with
``tf.compat.v1.saved_model.loader.load(session, ["serve"], dir)``; the signature's inputs are
fed by their tensor names and all its outputs fetched into the ``.npz``.
"""

import json
import os
import subprocess
import sys
from typing import Dict, List, Mapping, Sequence

import numpy as np


def serve_in_session(cases: Sequence[Mapping], folder: str, *,
                     timeout: float = 300.0) -> List[Dict[str, np.ndarray]]:
    """The outputs of each case ``{"dir", "signature", "inputs": {name: array}}`` served by
    the session-based loader in one subprocess (its stderr is shown when it fails)."""
    os.makedirs(folder, exist_ok=True)
    listed = []
    for k, case in enumerate(cases):
        inputs = {}
        for name, value in case["inputs"].items():
            inputs[name] = os.path.join(folder, f"case{k}_{name}.npy")
            np.save(inputs[name], np.asarray(value))
        listed.append({"dir": case["dir"], "signature": case["signature"], "inputs": inputs,
                       "outputs": os.path.join(folder, f"case{k}_outputs.npz")})
    spec = os.path.join(folder, "cases.json")
    with open(spec, "w") as f:
        json.dump(listed, f)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), spec], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"session loader failed:\n{proc.stderr[-4000:]}"
    results = []
    for case in listed:
        with np.load(case["outputs"]) as outputs:
            results.append({name: outputs[name] for name in outputs.files})
    return results


def _serve(case: Mapping) -> List[str]:
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], case["dir"])
        signature = meta.signature_def[case["signature"]]
        feed = {signature.inputs[name].name: np.load(path)
                for name, path in case["inputs"].items()}
        fetch = {name: info.name for name, info in signature.outputs.items()}
        outputs = session.run(fetch, feed_dict=feed)
    np.savez(case["outputs"], **outputs)
    return sorted(outputs)


def main(spec: str) -> None:
    with open(spec) as f:
        cases = json.load(f)
    for case in cases:
        print(json.dumps({"dir": case["dir"], "signature": case["signature"],
                          "outputs": _serve(case)}))


if __name__ == "__main__":
    main(sys.argv[1])

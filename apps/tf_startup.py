"""TensorFlow's start-up, without its C++ start-up log on the terminal.

Importing TensorFlow and probing for devices writes C++ log lines straight to file
descriptor 2 (oneDNN notices, "Could not find cuda drivers", "failed call to cuInit" on a
machine without a GPU). They are written before absl's logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` alone does not hold them back. The apps call
:func:`start_tensorflow` first: unless the user set ``TF_CPP_MIN_LOG_LEVEL`` (then TensorFlow
logs exactly as the user asked), it sets it to ``2``, captures descriptor 2 while TensorFlow
is imported and its devices are listed, and writes back every captured line that is not
start-up noise, so a real error still reaches the user.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

# An absl/glog info or warning line ("I0000 00:00:... port.cc:153] ..."), absl's notice that
# precedes them, and the CUDA probe's failure on a machine with no GPU driver.
_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\S+\s+\d+ \S+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|E\d{4} \d\d:\d\d:\S+\s+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)


def startup_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's C++ start-up log lines (kept back)."""
    return bool(_NOISE.match(line))


def start_tensorflow() -> None:
    """Imports TensorFlow and lists its devices, holding back the C++ start-up log.

    Does nothing special where ``TF_CPP_MIN_LOG_LEVEL`` is already set, or where TensorFlow
    is already imported.
    """
    if LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    os.environ[LOG_LEVEL_VARIABLE] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and not startup_noise(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")

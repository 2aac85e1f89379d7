"""apps.tf_startup: TensorFlow's C++ start-up log is held back unless the user asked for it."""

import os
import subprocess
import sys

import pytest

from apps.tf_startup import startup_noise

SCRIPT = (
    "from apps.tf_startup import start_tensorflow\n"
    "start_tensorflow()\n"
    "import tensorflow as tf\n"
    "print('sum', int(tf.constant(1) + 1))\n"
)


@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796620153.549991    6450 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796620153.550297    6450 cudart_stub.cc:31] Could not find cuda drivers",
    "W0000 00:00:1796620153.550297    6450 gpu_device.cc:2341] Cannot dlopen some GPU libraries.",
    "E0000 00:00:1796620157.578692    6450 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
])
def test_startup_lines_are_noise(line):
    assert startup_noise(line)


@pytest.mark.parametrize("line", [
    "E0000 00:00:1796620157.578692    6450 op_kernel.cc:1830] OP_REQUIRES failed: OOM",
    "Traceback (most recent call last):",
    "ValueError: --train-epochs must be >= 1",
    "F0000 00:00:1796620157.578692    6450 check.cc:1] Check failed",
])
def test_real_errors_are_kept(line):
    assert not startup_noise(line)


def _run(env):
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=True)


@pytest.mark.slow
def test_start_tensorflow_silences_the_start_up_log_only_when_the_user_did_not_set_a_level():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = _run(env)
    assert "sum 2" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if startup_noise(line)], quiet.stderr
    # The user's own level wins: at 0 TensorFlow logs as it always does (this oneDNN build logs
    # at start-up on any x86 CPU), and the captured descriptor is not involved.
    loud = _run({**env, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "sum 2" in loud.stdout
    assert any(startup_noise(line) for line in loud.stderr.splitlines()), loud.stderr

"""The logistic regression example: on a local cluster, and as separate processes under pslite-launch."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY / "python" / "examples" / "logistic_regression.py"
# The whole job takes a few seconds; a hang fails the test instead of CI.
TIMEOUT_SECONDS = 120


def launcher():
    """PSLITE_LAUNCH if set (CI sets it), else the newest pslite-launch that
    cargo built in this repository."""
    if "PSLITE_LAUNCH" in os.environ:
        return os.environ["PSLITE_LAUNCH"]
    built = [REPOSITORY / "target" / profile / "pslite-launch" for profile in ("release", "debug")]
    built = [path for path in built if path.exists()]
    if not built:
        pytest.skip("no pslite-launch: `cargo build -p pslite-tools --bin pslite-launch` or set PSLITE_LAUNCH")
    return str(max(built, key=lambda path: path.stat().st_mtime))


def test_example_trains_on_every_worker_as_separate_processes():
    command = [launcher(), "--servers", "2", "--workers", "3", "--", sys.executable, str(EXAMPLE), "--epochs", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    reports = re.findall(r"worker (\d+): 8000 examples, held-out accuracy ([0-9.]+) \(planted model ([0-9.]+)\)", done.stdout)
    assert sorted(rank for rank, _, _ in reports) == ["0", "1", "2"], done.stdout
    for _, trained, planted in reports:
        assert float(trained) >= float(planted) - 0.03, done.stdout


def test_example_trains_on_a_local_cluster_without_a_launcher():
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DMLC_")}
    command = [sys.executable, str(EXAMPLE), "--servers", "2", "--workers", "2", "--epochs", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=environment)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert len(re.findall(r"worker \d: 12000 examples, held-out accuracy", done.stdout)) == 2, done.stdout

"""The container image, built and used as a user would: `deploy/test-image.sh` (see its header for the steps)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "test-image.sh"
MISSING = [tool for tool in ("podman", "buildah") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"{' and '.join(MISSING)} not installed: apt-get install podman buildah"),
]


@pytest.mark.timeout(1200)  # the first run makes the base image and installs every dependency (~3 min)
def test_the_image_builds_serves_sends_and_receives_and_stops_cleanly() -> None:
    done = subprocess.run([str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=1100, check=False)
    assert done.returncode == 0, done.stderr[-4000:]  # each step with its time, the image's size, the failure
    assert "test-image: passed" in done.stderr

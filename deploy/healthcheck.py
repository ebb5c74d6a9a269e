"""The image's HEALTHCHECK: GET /health/ready for the roles that serve HTTP; a worker is healthy while it runs.

`serve` and `api` are ready when the database answers and a worker is alive (200; 503 otherwise). A worker has
no HTTP port: its container runs while its process does, and its health is what /health/ready of any API says.
"""

import itertools
import os
import sys
import urllib.error
import urllib.request


def role() -> str:
    """The zapgate command PID 1 runs (tini -- zapgate ROLE ...)."""
    with open("/proc/1/cmdline", "rb") as cmdline:
        args = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0") if arg]
    for before, arg in itertools.pairwise(args):
        if before.endswith("zapgate"):
            return arg
    return "serve"


def main() -> int:
    if role() == "worker":
        return 0
    port = os.environ.get("ZAPGATE_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"not ready: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

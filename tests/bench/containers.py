"""Helpers for the benchmarks that run podman containers of the offline image (scripts/build_image.sh)."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CONTAINERS_CONF = str(ROOT / "extensions" / "podman" / "containers.conf")


def podman(*args, timeout=120, check=True):
    """Run podman with the project's containers.conf; exit naming the command when it fails (unless check=False)."""
    proc = subprocess.run(["podman"] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF), check=False)
    if check and proc.returncode != 0:
        raise SystemExit("podman %s failed (rc=%d): %s" % (" ".join(str(a) for a in args[:3]), proc.returncode,
                                                           (proc.stderr or proc.stdout)[-2000:]))
    return proc


def image():
    """The tag of the offline image, built when missing."""
    proc = subprocess.run([str(ROOT / "scripts" / "build_image.sh")], capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF), check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit("scripts/build_image.sh failed: %s" % proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1]


def load():
    """The 1-minute load average, for the figures' machine conditions."""
    return round(os.getloadavg()[0], 1)

"""Debian packages a test module needs and installs on first use (CI runs as root on a clean
machine): Chromium for the dashboard's browser test, PostgreSQL for the cluster's tracking
server. Nothing is installed when ``CTR_NO_APT`` is set or apt-get is not available as root."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(package: str) -> str | None:
    """Install ``package`` with apt-get; None when that worked, else why it did not (a skip reason)."""
    if os.environ.get("CTR_NO_APT"):
        return f"{package} is not installed and package installation is turned off (CTR_NO_APT set)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{package} is not installed and apt-get is not available as root to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in ((["apt-get", "update"], 600),
                       (["apt-get", "install", "-y", "--no-install-recommends", package], 1200)):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not install {package}: {' '.join(cmd)}: {exc}"
        if done.returncode != 0:
            return f"could not install {package}: {' '.join(cmd)} exited {done.returncode}: {done.stderr[-500:]}"
    return None

"""What the benchmarks print about the machine they ran on: the figures mean little
without the file system, the CPU and the git they were measured with."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def mount_of(path: Path) -> tuple[str, str, str]:
    """(file system type, source, mount point) of the mount holding `path`."""
    real = os.path.realpath(path)
    best = ("?", "?", "")
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                source, target, fstype = line.split()[:3]
                target = target.replace("\\040", " ")
                if (real == target or real.startswith(target.rstrip("/") + "/")) and len(target) > len(best[2]):
                    best = (fstype, source, target)
    except OSError:
        pass
    return best


def git_version() -> str:
    try:
        return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip().removeprefix("git version ")
    except OSError:
        return "not found"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"

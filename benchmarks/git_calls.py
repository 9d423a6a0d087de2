"""How many git processes gitswarm starts for the demo swarm (six tasks in three
waves, scripted backend), by subcommand: the per-attempt cost of gitswarm's own git
calls, counted rather than timed, so it does not depend on how loaded the machine is.

    .venv/bin/python benchmarks/git_calls.py [--repeat 3]

A `git` shim first on PATH appends each call's subcommand to a file, then runs git.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHIM = """#!/bin/sh
echo "$1" >> "$GITSWARM_GIT_CALLS"
exec {git} "$@"
"""


def count_demo(work: Path) -> collections.Counter[str]:
    shim_dir = work / "shim"
    shim_dir.mkdir()
    git = shutil.which("git")
    assert git is not None, "git is not on PATH"
    (shim_dir / "git").write_text(SHIM.format(git=git))
    (shim_dir / "git").chmod(0o755)
    calls = work / "calls.txt"
    calls.write_text("")
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}", "GITSWARM_GIT_CALLS": str(calls)}
    proc = subprocess.run([sys.executable, "-m", "gitswarm", "demo", "--dir", str(work / "demo")], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the demo failed: {proc.stdout}{proc.stderr}")
    return collections.Counter(line for line in calls.read_text().splitlines() if line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    totals = []
    last: collections.Counter[str] = collections.Counter()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="gitswarm-gitcalls-") as tmp:
            last = count_demo(Path(tmp))
            totals.append(sum(last.values()))
    print(f"git processes for the demo (6 tasks): {sorted(totals)} over {args.repeat} runs "
          f"(about {min(totals) / 6:.0f} per task)")
    for name, n in last.most_common(10):
        print(f"  {n:4d}  git {name}")


if __name__ == "__main__":
    main()

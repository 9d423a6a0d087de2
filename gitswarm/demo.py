"""`gitswarm demo`: a sample repository and a three-wave swarm on it, scripted (no model).

Everything happens in a new folder; nothing of the user's is touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from . import gitops
from .config import parse_config
from .coordinator import Coordinator
from .launch import create_run
from .model import RunPhase
from .tasksfile import read_tasks_file

SWARM_YAML = """\
# The demo's swarm: three scripted workers (no model, no agent CLI needed).
version: 1
run:
  name: demo
  poll_interval_ms: 50
roles:
  - {role_id: impl, role_type: worker, backend: scripted, count: 3, task_kinds: [implement, test, docs]}
retries:
  max_task_attempts: 2
"""

TASKS_YAML = """\
goal: Grow the calc package into add, subtract and multiply, with tests and docs.
tasks:
  # wave 1: three independent modules, run in parallel
  - id: add
    title: Add addition
    files: [calc/add.py]
    script:
      - sleep: 0.3
      - write: {path: calc/add.py, content: "def add(a, b):\\n    return a + b\\n"}
  - id: sub
    title: Add subtraction
    files: [calc/sub.py]
    script:
      - sleep: 0.2
      - write: {path: calc/sub.py, content: "def sub(a, b):\\n    return a - b\\n"}
  - id: mul
    title: Add multiplication
    files: [calc/mul.py]
    script:
      - write: {path: calc/mul.py, content: "def mul(a, b):\\n    return a * b\\n"}
      - commit: "calc: multiplication"
  # wave 2: both need all three modules
  - id: api
    title: Export the operations
    deps: [add, sub, mul]
    files: [calc/__init__.py]
    script:
      - write: {path: calc/__init__.py, content: "from .add import add\\nfrom .mul import mul\\nfrom .sub import sub\\n\\n__all__ = ['add', 'sub', 'mul']\\n"}
  - id: tests
    title: Test the operations
    kind: test
    deps: [add, sub, mul]
    files: [tests/test_calc.py]
    script:
      - write: {path: tests/test_calc.py, content: "from calc.add import add\\nfrom calc.mul import mul\\nfrom calc.sub import sub\\n\\n\\ndef test_ops():\\n    assert add(2, 3) == 5\\n    assert sub(2, 3) == -1\\n    assert mul(2, 3) == 6\\n"}
  # wave 3: document it, after checking the package imports
  - id: docs
    title: Document the package
    kind: docs
    deps: [api, tests]
    files: [README.md]
    script:
      - run: "PYTHON -c 'import calc; assert calc.add(1, 2) == 3'"
      - append: {path: README.md, content: "\\n## Usage\\n\\n    from calc import add, sub, mul\\n"}
"""


def build_sample_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    gitops.git(path, "init", "-q", "-b", "main")
    if gitops.user_identity(path) is None:
        gitops.git(path, "config", "user.name", "Demo User")
        gitops.git(path, "config", "user.email", "demo@example.invalid")
    (path / "calc").mkdir(exist_ok=True)
    (path / "calc" / "__init__.py").write_text("")
    (path / "README.md").write_text("# calc\n\nA tiny calculator, grown by a swarm.\n")
    (path / "swarm.yaml").write_text(SWARM_YAML)
    (path / "tasks.yaml").write_text(TASKS_YAML.replace("PYTHON", sys.executable))
    gitops.git(path, "add", "-A")
    gitops.git(path, "commit", "-q", "-m", "calc: an empty package")
    return path


def _command_name() -> str:
    """`gitswarm` when the shell finds it, else the full path of this installation's
    script (after `make demo` it lives in .venv/bin, not on PATH)."""
    beside = Path(sys.executable).parent / "gitswarm"
    found = shutil.which("gitswarm")
    if found or not beside.exists():
        return "gitswarm"
    return str(beside)


def run_demo(directory: Path | None, report: Callable[[str], None], out: Callable[[str], None]) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="gitswarm-demo-"))
    repo = build_sample_repo(root / "calc" if directory is None else root)
    out(f"sample repository: {repo}")
    config = parse_config(SWARM_YAML, str(repo / "swarm.yaml")).config
    tasks = read_tasks_file(repo / "tasks.yaml")
    launch = create_run(repo, config, list(tasks.tasks), goal=tasks.goal or "")
    out(f"run {launch.run_id}: {len(tasks.tasks)} tasks in 3 waves, 3 scripted workers")
    state = Coordinator(repo, launch.run_id, config, report=report).run()
    ok = state.run.phase == RunPhase.COMPLETED
    log = subprocess.run(
        ["git", "log", "--oneline", "--graph", f"attoswarm/{launch.run_id}"], cwd=repo, capture_output=True, text=True
    ).stdout
    out("")
    out(f"run {state.run.phase.value}" + (f" ({state.run.reason})" if state.run.reason else ""))
    out(log.rstrip())
    out("")
    exe = _command_name()
    out("Review it:")
    out(f"  cd {repo}")
    out(f"  {exe} status {launch.run_id}")
    out(f"  {exe} log {launch.run_id}")
    out(f"  git log --notes=attoswarm/{launch.run_id} --first-parent attoswarm/{launch.run_id}")
    out(f"  {exe} monitor {launch.run_id}           # the dashboard")
    out(f"  {exe} finalize {launch.run_id} --merge     # or --keep / --discard")
    return 0 if ok else 1

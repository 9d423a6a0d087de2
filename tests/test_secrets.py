"""The run's state is meant to be pushed: no secret and no absolute path of the user's
machine in any object it writes (issue 11, point 11).

Role `env` values are stored by name only: a literal value is redacted, a `${VAR}`
reference is kept as the reference and resolved from the environment when the agent
starts. A redacted literal reaches the agent on `resume` from the environment variable
of the same name (or, for `--detach`, from the starting process), else resume refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitswarm.config import REDACTED_ENV_VALUE, parse_config
from gitswarm.errors import InputError

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, status, write_tasks

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX shell agents", allow_module_level=True)

SECRET = "sk-test-4f1d9c2b7e-unique-secret-value"
REFERENCED = "sk-ref-88a1c0d3-referenced-secret"

# The agent: records what it sees in a file outside the repository (never in the
# worktree: that would commit the value), and writes its task's file.
AGENT = """\
import os, pathlib, sys
task = sys.argv[1]
seen = pathlib.Path(os.environ["SEEN_DIR"]) / f"{task}.env"
seen.write_text(os.environ.get("MY_API_KEY", "<unset>") + "\\n" + os.environ.get("OTHER_KEY", "<unset>"))
pathlib.Path(f"{task}.txt").write_text(task + "\\n")
"""


def _config(folder: Path, seen: Path) -> Path:
    """The agent is on PATH by name, so the config holds no absolute path but the
    SEEN_DIR value (a literal: redacted like any other)."""
    path = folder / "swarm.yaml"
    path.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\nroles:\n"
        "  - role_id: impl\n    backend: command\n    command: seeing-agent\n    args: ['{task_id}']\n"
        "    count: 1\n    task_kinds: [implement]\n"
        f"    env:\n      MY_API_KEY: {SECRET}\n      OTHER_KEY: ${{GITSWARM_TEST_OTHER}}\n      SEEN_DIR: {seen}\n"
    )
    return path


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    agent = bindir / "seeing-agent"
    agent.write_text(f"#!{sys.executable}\n{AGENT}")
    agent.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GITSWARM_TEST_OTHER", REFERENCED)
    seen = tmp_path / "seen"
    seen.mkdir()
    repo = make_repo(tmp_path / "repo")
    tasks = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: One, files: [t1.txt]}\n"
                                  "  - {id: t2, title: Two, files: [t2.txt], deps: [t1]}\n")
    return repo, _config(tmp_path, seen), tasks, seen


def _all_objects(repo: Path) -> bytes:
    """Every object of the repository, loose or packed, reachable or not."""
    args = ["git", "cat-file", "--batch-all-objects", "--batch"]
    proc = subprocess.run(args, cwd=repo, capture_output=True, check=True)
    return proc.stdout


def _assert_nothing_leaked(repo: Path, tmp_path: Path) -> None:
    blob = _all_objects(repo)
    assert blob, "the run wrote objects"
    for needle in (SECRET, REFERENCED, str(tmp_path), str(tmp_path.resolve())):
        assert needle.encode() not in blob, f"{needle!r} is in a git object"


def test_a_finished_run_keeps_no_env_value_and_no_absolute_path_in_any_object(
    setup: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    repo, cfg, tasks, seen = setup
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (seen / "t1.env").read_text() == f"{SECRET}\n{REFERENCED}", "the agent sees both values"
    _assert_nothing_leaked(repo, tmp_path)
    stored = status(repo, "r1")
    assert stored["phase"] == "completed"
    run_json = json.loads(git(repo, "show", "refs/attoswarm/r1/state:run.json"))
    env = run_json["config"]["roles"][0]["env"]
    assert env == {"MY_API_KEY": REDACTED_ENV_VALUE, "OTHER_KEY": "${GITSWARM_TEST_OTHER}",
                   "SEEN_DIR": REDACTED_ENV_VALUE}
    assert checkout_snapshot(repo) == before


def test_resume_gives_the_agent_a_literal_from_the_environment_or_refuses(
    setup: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, cfg, tasks, seen = setup
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    refs = git(repo, "for-each-ref")

    monkeypatch.delenv("MY_API_KEY", raising=False)
    refused = gitswarm(repo, "resume", "r1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "MY_API_KEY" in refused.stderr and "SEEN_DIR" in refused.stderr and "Traceback" not in refused.stderr
    assert "set" in refused.stderr
    assert git(repo, "for-each-ref") == refs, "a refused resume writes nothing"
    assert not (seen / "t1.env").exists()

    monkeypatch.setenv("MY_API_KEY", SECRET)
    monkeypatch.setenv("SEEN_DIR", str(seen))
    resumed = gitswarm(repo, "resume", "r1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (seen / "t2.env").read_text() == f"{SECRET}\n{REFERENCED}"
    _assert_nothing_leaked(repo, tmp_path)


def test_an_unset_reference_refuses_the_start_before_anything_is_written(
    setup: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, cfg, tasks, _ = setup
    monkeypatch.delenv("GITSWARM_TEST_OTHER")
    refs = git(repo, "for-each-ref")
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "GITSWARM_TEST_OTHER" in proc.stderr and "OTHER_KEY" in proc.stderr
    assert git(repo, "for-each-ref") == refs


def test_a_detached_start_hands_the_literal_to_its_background_coordinator(
    setup: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, cfg, tasks, seen = setup
    monkeypatch.delenv("MY_API_KEY", raising=False)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1", "--detach")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deadline = time.monotonic() + 60
    while status(repo, "r1")["phase"] not in ("completed", "shutdown") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(repo, "r1")["phase"] == "completed", (repo / ".gitswarm" / "r1" / "coordinator.log").read_text()
    assert (seen / "t2.env").read_text() == f"{SECRET}\n{REFERENCED}"
    _assert_nothing_leaked(repo, tmp_path)


# -- pure: what the state stores ------------------------------------------------------------


CONFIG = """\
version: 1
run: {run_dir: %(repo)s/.runs}
roles:
  - role_id: impl
    backend: scripted
    env: {A: literal, B: "${B_SOURCE}", C: "x ${B_SOURCE}"}
worktree: {dir: %(repo)s/.trees}
"""


def test_the_stored_config_redacts_literals_keeps_references_and_relativises_paths(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = parse_config(CONFIG % {"repo": repo}).config
    stored = config.to_state(repo)
    assert stored["roles"][0]["env"] == {"A": REDACTED_ENV_VALUE, "B": "${B_SOURCE}", "C": REDACTED_ENV_VALUE}
    assert stored["run"]["run_dir"] == ".runs" and stored["worktree"]["dir"] == ".trees"
    assert str(tmp_path) not in json.dumps(stored)
    assert config.roles[0].env["A"] == "literal", "the in-memory config keeps the value for this process"


def test_agent_env_resolves_references_and_redacted_literals_from_the_environment(tmp_path: Path) -> None:
    config = parse_config(CONFIG % {"repo": tmp_path}).config
    role = config.roles[0]
    assert role.agent_env({"B_SOURCE": "b"}) == {"A": "literal", "B": "b", "C": "x ${B_SOURCE}"}
    from gitswarm.config import SwarmConfig

    restored = SwarmConfig.from_dict(config.to_state(tmp_path))
    from_env = restored.roles[0].agent_env({"B_SOURCE": "b", "A": "from-env", "C": "c"})
    assert from_env == {"A": "from-env", "B": "b", "C": "c"}
    with pytest.raises(InputError) as exc:
        restored.check_env({})
    message = str(exc.value)
    assert "A" in message and "B_SOURCE" in message and "role impl" in message

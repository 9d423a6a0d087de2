"""Worker hooks: an agent's plain `git commit` gets trailers, identity and the syntax gate,
through environment variables only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gitswarm import gitops
from gitswarm.hooks import worker
from gitswarm.hooks.worker import install_hooks, worker_env
from gitswarm.model import Agent

from .conftest import git

AGENT = Agent(id="impl-1", role="impl", backend="claude", model="sonnet")
USER = ("Test User", "user@example.com")


@pytest.fixture
def setup(repo: Path, tmp_path: Path) -> dict[str, object]:
    """A repository, a worker worktree on a work branch, hooks installed, and the
    environment an agent's processes would get."""
    config_before = (repo / ".git" / "config").read_bytes()
    hooks = install_hooks(repo / ".gitswarm" / "r1" / "hooks")
    gitops.ensure_excluded(repo, "/.gitswarm/")
    wt = tmp_path / "wt"
    gitops.add_worktree(repo, wt, "attoswarm-work/r1/t1", "HEAD")
    env = {**os.environ, **worker_env(hooks_dir=hooks, run_id="r1", task_id="t1", attempt=2,
                                      agent=AGENT, committer=USER)}
    # The agent's shell has none of the test identity: only what worker_env gives.
    return {"repo": repo, "wt": wt, "hooks": hooks, "env": env, "config": config_before}


def agent_git(s: dict[str, object], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=s["wt"], env=env or s["env"], capture_output=True, text=True)


def trailers(wt: Path, rev: str = "HEAD") -> list[str]:
    return git(wt, "log", "-1", "--format=%(trailers:only,unfold)", rev).splitlines()


def test_a_plain_commit_gets_trailers_the_agent_as_author_and_the_user_as_committer(setup: dict) -> None:
    wt = setup["wt"]
    (wt / "feature.py").write_text("def feature():\n    return 1\n")
    assert agent_git(setup, "add", "feature.py").returncode == 0
    result = agent_git(setup, "commit", "-q", "-m", "Add feature")
    assert result.returncode == 0, result.stderr

    assert git(wt, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s") == (
        "impl-1 (claude sonnet) <impl-1@gitswarm.invalid>|Test User <user@example.com>|Add feature"
    )
    assert trailers(wt) == [
        "Swarm-Run: r1", "Swarm-Task: t1", "Swarm-Attempt: 2", "Swarm-Agent: impl-1 (claude sonnet)",
    ]
    assert (setup["repo"] / ".git" / "config").read_bytes() == setup["config"]
    assert git(setup["repo"], "status", "--porcelain", "--untracked-files=all") == ""


def test_commit_all_of_leftovers_gets_the_same_treatment(setup: dict) -> None:
    wt = setup["wt"]
    (wt / "left.txt").write_text("left over\n")
    head = gitops.commit_all(wt, "gitswarm: leftovers of t1", setup["env"])
    assert head == git(wt, "rev-parse", "HEAD")
    assert trailers(wt)[0] == "Swarm-Run: r1"
    assert git(wt, "log", "-1", "--format=%an") == "impl-1 (claude sonnet)"


def test_amending_replaces_the_trailers(setup: dict) -> None:
    wt = setup["wt"]
    (wt / "a.txt").write_text("a\n")
    agent_git(setup, "add", "a.txt")
    assert agent_git(setup, "commit", "-q", "-m", "A").returncode == 0
    env3 = {**setup["env"], "GITSWARM_ATTEMPT": "3"}
    assert agent_git(setup, "commit", "-q", "--amend", "-m", "A again", env=env3).returncode == 0
    assert [t for t in trailers(wt) if t.startswith("Swarm-Attempt")] == ["Swarm-Attempt: 3"]


def test_an_empty_message_still_aborts_the_commit(setup: dict) -> None:
    wt = setup["wt"]
    before = git(wt, "rev-parse", "HEAD")
    (wt / "a.txt").write_text("a\n")
    agent_git(setup, "add", "a.txt")
    result = agent_git(setup, "commit", "-q")  # GIT_EDITOR=true: the message stays empty
    assert result.returncode != 0
    assert git(wt, "rev-parse", "HEAD") == before


def test_pre_commit_rejects_a_broken_python_file(setup: dict) -> None:
    wt = setup["wt"]
    before = git(wt, "rev-parse", "HEAD")
    (wt / "pkg" / "broken.py").write_text("def ok():\n    return (1,\n\nx = 1\n")
    agent_git(setup, "add", "-A")
    result = agent_git(setup, "commit", "-q", "-m", "broken")
    assert result.returncode != 0
    assert "pkg/broken.py:2:12: '(' was never closed" in result.stderr
    assert git(wt, "rev-parse", "HEAD") == before


def test_pre_commit_checks_what_commit_a_commits(setup: dict) -> None:
    """`git commit -a` stages into a temporary index: the gate must read that one."""
    wt = setup["wt"]
    (wt / "README.md").write_text("fine\n")
    (wt / "pkg" / "__init__.py").write_text("x = [\n")
    result = agent_git(setup, "commit", "-q", "-a", "-m", "all")
    assert result.returncode != 0
    assert "pkg/__init__.py:1:5:" in result.stderr


def test_pre_commit_is_not_fooled_by_a_gitswarm_package_in_the_worktree(setup: dict) -> None:
    """Working on gitswarm itself (or a project with a `gitswarm` package): the worktree's
    copy must not replace the real gate."""
    wt = setup["wt"]
    (wt / "gitswarm").mkdir()
    (wt / "gitswarm" / "__init__.py").write_text("")
    (wt / "gitswarm" / "gates.py").write_text("def main(argv):\n    return 0\n")
    (wt / "broken.json").write_text("{")
    agent_git(setup, "add", "-A")
    result = agent_git(setup, "commit", "-q", "-m", "sneaky")
    assert result.returncode != 0
    assert "broken.json:1:2:" in result.stderr


def test_pre_commit_lets_the_commit_through_when_the_gate_cannot_run(setup: dict, tmp_path: Path) -> None:
    fake_python = tmp_path / "python-without-gitswarm"
    fake_python.write_text("#!/bin/sh\nexit 5\n")
    fake_python.chmod(0o755)
    wt = setup["wt"]
    (wt / "broken.py").write_text("(")
    agent_git(setup, "add", "-A")
    result = agent_git(setup, "commit", "-q", "-m", "x", env={**setup["env"], "GITSWARM_PYTHON": str(fake_python)})
    assert result.returncode == 0, result.stderr
    assert "syntax gate did not run" in result.stderr


def test_hooks_do_nothing_outside_a_worker(setup: dict, tmp_path: Path) -> None:
    hooks: Path = setup["hooks"]
    plain = {k: v for k, v in os.environ.items() if not k.startswith("GITSWARM_")}
    msg = tmp_path / "msg"
    msg.write_text("Subject\n")
    subprocess.run([str(hooks / "commit-msg"), str(msg)], cwd=setup["wt"], env=plain, check=True)
    assert msg.read_text() == "Subject\n"
    (setup["wt"] / "broken.py").write_text("(")
    git(setup["wt"], "add", "broken.py")
    assert subprocess.run([str(hooks / "pre-commit")], cwd=setup["wt"], env=plain).returncode == 0


def test_the_users_config_is_untouched_and_their_git_config_count_is_kept(repo: Path, tmp_path: Path) -> None:
    config_before = (repo / ".git" / "config").read_bytes()
    hooks = install_hooks(tmp_path / "hooks")
    base = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "swarmtest.keep", "GIT_CONFIG_VALUE_0": "yes"}
    extra = worker_env(hooks_dir=hooks, run_id="r1", task_id="t1", attempt=1, agent=AGENT,
                       committer=USER, base_env=base)
    assert extra["GIT_CONFIG_COUNT"] == "5"
    assert "GIT_CONFIG_KEY_0" not in extra
    env = {**base, **extra}

    def config(key: str) -> str:
        return subprocess.run(["git", "config", "--get", key], cwd=repo, env=env, capture_output=True,
                              text=True).stdout.strip()

    assert config("swarmtest.keep") == "yes"
    assert config("core.hooksPath") == str(hooks.resolve())
    assert config("gc.auto") == "0"
    assert config("maintenance.auto") == "false"
    assert config("commit.gpgSign") == "false"
    (repo / "x.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "x.py"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=repo, env=env, check=True)
    assert git(repo, "log", "-1", "--format=%(trailers:key=Swarm-Run,valueonly)") == "r1"
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert git(repo, "config", "--get", "core.hooksPath", check=False) == ""


def test_worker_env_values(tmp_path: Path) -> None:
    env = worker_env(hooks_dir=tmp_path, run_id="r1", task_id="t9", attempt=4, agent=AGENT, committer=None,
                     python="/opt/py", base_env={})
    assert env["GIT_CONFIG_COUNT"] == "4"
    assert env["GIT_CONFIG_KEY_0"] == "core.hooksPath" and env["GIT_CONFIG_VALUE_0"] == str(tmp_path.resolve())
    assert (env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]) == ("impl-1 (claude sonnet)", "impl-1@gitswarm.invalid")
    assert (env["GIT_COMMITTER_NAME"], env["GIT_COMMITTER_EMAIL"]) == gitops.FALLBACK_IDENTITY
    assert (env["GITSWARM_RUN"], env["GITSWARM_TASK"], env["GITSWARM_ATTEMPT"]) == ("r1", "t9", "4")
    assert env["GITSWARM_AGENT"] == "impl-1 (claude sonnet)" and env["GITSWARM_PYTHON"] == "/opt/py"
    assert worker_env(hooks_dir=tmp_path, run_id="r", task_id="t", attempt=1, agent=AGENT, committer=None,
                      base_env={"GIT_CONFIG_COUNT": "junk"})["GIT_CONFIG_COUNT"] == "4"
    assert worker_env(hooks_dir=tmp_path, run_id="r", task_id="t", attempt=1, agent=AGENT,
                      committer=None)["GITSWARM_PYTHON"] == sys.executable


def test_install_hooks_is_idempotent_and_fixes_modes(tmp_path: Path) -> None:
    dest = tmp_path / "hooks"
    dest.mkdir()
    (dest / "pre-commit").write_text("#!/bin/sh\nexit 1\n")  # stale, not executable
    (dest / "pre-commit").chmod(0o644)
    assert install_hooks(dest) == dest
    for name in worker.HOOK_NAMES:
        f = dest / name
        assert stat.S_IMODE(f.stat().st_mode) == 0o755
        assert f.read_bytes() == (Path(worker.__file__).parent / "git" / name).read_bytes()
    snapshot = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.iterdir()}
    install_hooks(dest)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.iterdir()} == snapshot

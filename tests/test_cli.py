"""The read-side CLI, through the real entry point: exit codes, JSON shapes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitswarm.cli import main
from gitswarm.store import Store

from .conftest import REPO_ROOT, git

BAD_CONFIGS = sorted((REPO_ROOT / "tests" / "data" / "bad_configs").glob("*.yaml"))
GITSWARM = [sys.executable, "-m", "gitswarm"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GITSWARM, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _expectation(path: Path) -> tuple[str, str]:
    first = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert first.startswith("# expect-error:"), f"{path.name} lacks its expectation line"
    pos, _, text = first[len("# expect-error:"):].strip().partition(": ")
    return pos, text


def _make_run(repo: Path, run_id: str = "20261123-demo-abcd", **info: object) -> None:
    rs = Store(repo).create_run({"id": run_id, "goal": "add subtract", "swarm_branch": f"attoswarm/{run_id}", **info})
    rs.append({"type": "plan_set", "tasks": [{"id": "t1", "title": "Add subtract", "files": ["pkg/sub.py"]}, {"id": "t2", "title": "Use it", "deps": ["t1"]}]})
    rs.append({"type": "phase_changed", "phase": "running"})
    rs.append({"type": "attempt_started", "task": "t1", "n": 1, "agent": "impl-1", "backend": "scripted", "prompt": "# Task t1\nwrite pkg/sub.py\n"})
    rs.append({"type": "attempt_finished", "task": "t1", "n": 1, "result": "failed", "error": "pkg/sub.py:2:5: invalid syntax", "retry": True, "usage": {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01}})


def test_bad_configs_exist_in_number() -> None:
    assert len(BAD_CONFIGS) >= 25


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.name)
def test_bad_config_exits_2_with_position(path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pos, text = _expectation(path)
    assert main(["validate", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert f"{path}:{pos}:" in stderr, stderr
    assert text in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("path", BAD_CONFIGS[:3] + BAD_CONFIGS[-2:], ids=lambda p: p.name)
def test_bad_config_through_the_installed_command(path: Path, repo: Path) -> None:
    """The same, as a user runs it: a real process, exit 2, no traceback."""
    pos, _ = _expectation(path)
    for cmd in (["validate", str(path)], ["doctor", str(path)]):
        p = run_cli(*cmd, cwd=repo)
        assert p.returncode == 2, p.stderr
        assert f":{pos}:" in p.stderr and "Traceback" not in p.stderr


def test_usage_errors_exit_2(repo: Path) -> None:
    p = run_cli("status", "--no-such-flag", cwd=repo)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = run_cli("frobnicate", cwd=repo)
    assert p.returncode == 2


def test_help_explains_every_command(repo: Path) -> None:
    p = run_cli("--help", cwd=repo)
    assert p.returncode == 0
    for cmd in ("ls", "status", "log", "show", "doctor", "init", "validate"):
        assert cmd in p.stdout
    attoswarm = subprocess.run([str(Path(sys.executable).parent / "attoswarm"), "--help"], capture_output=True, text=True)
    assert attoswarm.returncode == 0 and "swarm branch" in attoswarm.stdout


def test_ls_status_log_show_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_run(repo)
    assert main(["ls", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in runs] == ["20261123-demo-abcd"] and runs[0]["phase"] == "running"

    assert main(["status", "20261123", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    for key in ("id", "phase", "goal", "swarm_branch", "base", "parent", "usage", "tasks"):
        assert key in status
    assert status["usage"]["input_tokens"] == 100 and status["usage"]["cost_usd"] == 0.01
    t1 = next(t for t in status["tasks"] if t["id"] == "t1")
    assert t1["status"] == "pending" and t1["deps"] == [] and len(t1["attempts"]) == 1
    assert t1["attempts"][0]["error"] == "pkg/sub.py:2:5: invalid syntax"
    assert next(t for t in status["tasks"] if t["id"] == "t2")["deps"] == ["t1"]

    assert main(["log", "@last", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in events] == ["run_created", "plan_set", "phase_changed", "attempt_started", "attempt_finished"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5] and all(len(e["state_commit"]) == 40 for e in events)

    assert main(["show", "@last", "t1", "--prompt"]) == 0
    assert capsys.readouterr().out == "# Task t1\nwrite pkg/sub.py\n"
    assert main(["show", "@last", "t1"]) == 0
    shown = capsys.readouterr().out
    assert "invalid syntax" in shown and "impl-1" in shown
    assert main(["show", "@last", "t9"]) == 2
    assert "no task 't9'" in capsys.readouterr().err


def test_human_output(repo: Path) -> None:
    _make_run(repo)
    p = run_cli("status", "@last", cwd=repo)
    assert p.returncode == 0 and "20261123-demo-abcd" in p.stdout and "Add subtract" in p.stdout
    p = run_cli("log", "@last", cwd=repo)
    assert "t1#1 started by impl-1 (scripted)" in p.stdout
    p = run_cli("ls", cwd=repo)
    assert "20261123-demo-abcd" in p.stdout and "add subtract" in p.stdout


def test_show_lineage(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_run(repo, "parent-run")
    store = Store(repo)
    tip = str(store.run("parent-run").tip())
    store.create_run({"id": "child-run", "goal": "more", "parent": {"run": "parent-run", "state": tip}}, parent_state=tip)
    assert main(["show", "child-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parent"] == {"run": "parent-run", "state": tip} and data["ancestors"] == ["parent-run"]
    assert main(["show", "parent-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["children"] == ["child-run"]
    assert main(["ls", "--json"]) == 0
    assert {r["id"]: r["parent"] for r in json.loads(capsys.readouterr().out)} == {"parent-run": None, "child-run": "parent-run"}


def test_run_argument_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "@last"]) == 2
    assert "no runs" in capsys.readouterr().err
    _make_run(repo, "abc-1")
    _make_run(repo, "abc-2")
    assert main(["status", "abc"]) == 2
    assert "matches 2 runs" in capsys.readouterr().err


def test_outside_a_repository(tmp_path: Path) -> None:
    p = run_cli("ls", cwd=tmp_path)
    assert p.returncode == 2 and "not inside a git repository" in p.stderr
    p = run_cli("doctor", cwd=tmp_path)
    assert p.returncode == 1 and "not inside a git repository" in p.stdout


def test_init_writes_configs_that_load(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert (repo / "swarm.yaml").exists()
    assert main(["init"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", "hybrid.yaml", "--hybrid"]) == 0
    for name in ("swarm.yaml", "hybrid.yaml"):
        assert main(["validate", name]) == 0
        captured = capsys.readouterr()
        assert "ok" in captured.out and captured.err == ""


def test_doctor(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "swarm.yaml").write_text("version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: scripted, count: 2}\n")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {c["name"]: c["status"] for c in report["checks"]}
    assert names["git"] == "ok" and names["repository"] == "ok" and names["role impl"] == "ok"

    (repo / "claude.yaml").write_text(
        "version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: claude, command: gitswarm-test-no-such-binary}\n"
    )
    assert main(["doctor", "claude.yaml"]) == 1
    text = capsys.readouterr().out
    assert "gitswarm-test-no-such-binary" in text and "not found" in text

    fake = repo / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    fake.chmod(0o755)
    (repo / "local.yaml").write_text("version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: claude, command: ./bin/claude}\n")
    assert main(["doctor", "local.yaml", "--json"]) == 0
    detail = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "role impl")["detail"]
    assert "9.9.9 (Claude Code)" in detail


def test_doctor_unborn_head(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    p = run_cli("doctor", cwd=tmp_path)
    assert p.returncode == 1 and "HEAD has no commit" in p.stdout


def test_read_commands_leave_the_checkout_alone(repo: Path) -> None:
    _make_run(repo)
    before = (git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all"), (repo / ".git" / "index").read_bytes())
    for cmd in (["ls"], ["status", "@last"], ["log", "@last"], ["show", "@last"], ["show", "@last", "t1"], ["doctor"]):
        run_cli(*cmd, cwd=repo)
    after = (git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all"), (repo / ".git" / "index").read_bytes())
    assert before == after
    assert not (repo / ".gitswarm").exists()


def test_python_dash_m(repo: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "gitswarm", "--version"], capture_output=True, text=True, env={**os.environ})
    assert p.returncode == 0 and p.stdout.startswith("gitswarm ")


BAD_TASKS = sorted(p for p in (REPO_ROOT / "tests" / "data" / "bad_tasks").iterdir() if not p.name.endswith(".expect"))


def _tasks_expectation(path: Path) -> tuple[str, str]:
    if path.suffix == ".json":
        line = Path(str(path) + ".expect").read_text().strip()
    else:
        line = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
        line = line.removeprefix("<!--").removesuffix("-->").strip().removeprefix("# ").removeprefix("expect-error:").strip()
    pos, _, text = line.partition(": ")
    return pos, text


@pytest.mark.parametrize("path", BAD_TASKS, ids=lambda p: p.name)
def test_bad_tasks_file_exits_2_with_position(path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "swarm.yaml").write_text("version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: scripted}\n")
    pos, text = _tasks_expectation(path)
    assert main(["validate", "swarm.yaml", "--tasks-file", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert f"{path}:{pos}:" in stderr and text in stderr, stderr
    assert "Traceback" not in stderr


def test_compat_manifests_validate(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # swarmtester9 has a task of kind 'judge': a config without a judge role is refused.
    (repo / "swarm.yaml").write_text("version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: scripted}\n"
                                     "  - {role_id: review, role_type: judge, backend: scripted}\n")
    manifests = sorted((REPO_ROOT.parent / "shared" / "compat" / "attoswarm-runs").glob("*.json"))
    assert len(manifests) == 3
    for m in manifests:
        assert main(["validate", "swarm.yaml", "--tasks-file", str(m)]) == 0
        assert "waves" in capsys.readouterr().out

"""`gitswarm doctor` on configs with the real agent CLIs: found, versions, and with
--live one real turn against the fake model API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .agentcli import PINNED, claude_env, codex_env, codex_provider_args, require
from .conftest import make_repo
from .fakeapi import FakeAPI, Fault, Text
from .runkit import GITSWARM, gitswarm


def _config(path: Path, *roles: dict) -> Path:
    path.write_text(json.dumps({"version": 1, "roles": list(roles)}, indent=2))
    return path


def _checks(out: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_doctor_names_versions_and_runs_one_turn_of_each_agent(tmp_path: Path) -> None:
    claude, codex = require("claude"), require("codex")
    repo = make_repo(tmp_path / "repo")
    with FakeAPI([Text("ok")]) as api:
        cfg = _config(tmp_path / "swarm.yaml",
                      {"role_id": "impl", "backend": "claude", "command": claude, "model": "claude-sonnet-4-5",
                       "env": claude_env(api.url, tmp_path / "h1")},
                      {"role_id": "cx", "backend": "codex", "command": codex, "model": "gpt-fake",
                       "env": codex_env(tmp_path / "h2"), "args": codex_provider_args(api.url)})
        plain = gitswarm(repo, "doctor", str(cfg), "--json")
        live = gitswarm(repo, "doctor", str(cfg), "--live", "--json", timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    checks = _checks(plain.stdout)
    assert PINNED["claude"] in checks["role impl"]["detail"] and PINNED["codex"] in checks["role cx"]["detail"]
    assert "live impl" not in checks
    assert live.returncode == 0, live.stdout + live.stderr
    checks = _checks(live.stdout)
    assert checks["live impl"]["status"] == "ok" and "answered 'ok'" in checks["live impl"]["detail"]
    assert checks["live cx"]["status"] == "ok" and "answered 'ok'" in checks["live cx"]["detail"]
    assert {r.api for r in api.scripted()} == {"anthropic", "responses"}


def test_a_failing_turn_is_a_fail_with_the_agents_reason(tmp_path: Path) -> None:
    claude = require("claude")
    repo = make_repo(tmp_path / "repo")
    with FakeAPI([Fault("status", status=401, message="invalid x-api-key")]) as api:
        cfg = _config(tmp_path / "swarm.yaml", {"role_id": "impl", "backend": "claude", "command": claude,
                                                "env": {**claude_env(api.url, tmp_path / "h"),
                                                        "CLAUDE_CODE_MAX_RETRIES": "0"}})
        p = gitswarm(repo, "doctor", str(cfg), "--live", timeout=300)
    assert p.returncode == 1
    assert "live impl" in p.stdout and "one turn failed" in p.stdout and "Invalid API key" in p.stdout
    assert "not ready" in p.stdout


def test_a_missing_binary_names_how_to_install_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = _config(tmp_path / "swarm.yaml", {"role_id": "impl", "backend": "claude"},
                  {"role_id": "ai", "backend": "aider", "model": "openai/x"})
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # A PATH with git and nothing else: neither claude nor aider can be found.
    git_dir = str(Path(shutil.which("git") or "/usr/bin/git").parent)
    env = {**os.environ, "PATH": f"{empty}:{git_dir}"}
    p = subprocess.run([*GITSWARM, "doctor", str(cfg), "--json", "--live"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    checks = _checks(p.stdout)
    assert checks["role impl"]["detail"] == ("claude: 'claude' not found; install it: "
                                             "npm install -g @anthropic-ai/claude-code")
    assert checks["role ai"]["detail"].endswith("install it: pip install aider-chat")
    assert checks["live impl"] == {"name": "live impl", "status": "fail",
                                   "detail": "claude: not run, 'claude' is not found"}

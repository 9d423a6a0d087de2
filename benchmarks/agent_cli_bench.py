"""What an agent CLI costs gitswarm before the model says anything: the wall time of
one attempt through each real backend against the fake model API on 127.0.0.1, for a
conversation of one answer ("done") and of one shell command plus an answer.

    .venv/bin/python benchmarks/agent_cli_bench.py [--repeat 5]

The model's own time is zero here (the fake API answers at once), so the figures are
the CLI's start-up, its requests and gitswarm's handling of its output: the floor under
every real attempt. The CLIs come from .tools/ (`.ci/run` installs them) or PATH.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.benchkit import cpu_model, git_version  # noqa: E402
from gitswarm.backends.base import AgentRequest  # noqa: E402
from gitswarm.backends.registry import get_backend  # noqa: E402
from gitswarm.model import TaskSpec  # noqa: E402
from tests.agentcli import aider_env, claude_env, codex_env, codex_provider_args, find  # noqa: E402
from tests.fakeapi import FakeAPI, Files, Shell, Text  # noqa: E402


def _repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "b"], ["config", "user.email", "b@b"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    (folder / "README.md").write_text("# bench\n")
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=folder, check=True)
    return folder


def _one(backend: str, binary: str, api: FakeAPI, tmp: Path, key: str, setup: Callable[[FakeAPI, Path], dict[str, Any]],
         backend_obj: Any = None) -> tuple[float, bool]:
    work = _repo(tmp / key)
    extra = setup(api, tmp)
    request = AgentRequest(task=TaskSpec(id=key, title="bench"), attempt=1, prompt=f"Task {key}: do it",
                           workdir=work, role_id="bench", backend=backend, agent_id="bench-1", command=binary,
                           heartbeat_timeout=60, timeout=120, **extra)
    b = backend_obj or get_backend(backend)
    started = time.perf_counter()
    run = b.start(request)
    for _ in run.events():
        pass
    took = time.perf_counter() - started
    if backend_obj is None:
        b.close()
    return took, run.result.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {__import__('os').cpu_count()} CPUs, git {git_version()}")
    setups: dict[str, tuple[str, Callable[[FakeAPI, Path], dict[str, Any]], list[Any], list[Any]]] = {
        "claude": ("claude", lambda api, tmp: {"env": claude_env(api.url, tmp / "home-claude"), "model": "claude-sonnet-4-5"},
                   [Text("done")], [Shell("echo hi > a.txt"), Text("done")]),
        "codex": ("codex", lambda api, tmp: {"env": codex_env(tmp / "home-codex"), "model": "gpt-fake",
                                             "args": tuple(codex_provider_args(api.url))},
                  [Text("done")], [Shell("echo hi > a.txt"), Text("done")]),
        "codex-mcp": ("codex", lambda api, tmp: {"env": codex_env(tmp / "home-codex"), "model": "gpt-fake",
                                                 "args": tuple(codex_provider_args(api.url))},
                      [Text("done")], [Shell("echo hi > a.txt"), Text("done")]),
        "aider": ("aider", lambda api, tmp: {"env": aider_env(api.url, tmp / "home-aider"), "model": "openai/gpt-fake",
                                             "options": {"edit_format": "whole"}},
                  [Text("done")], [Files({"a.txt": "hi\n"}, "done")]),
    }
    print(f"{'backend':<10} {'conversation':<22} {'median s':>9} {'min s':>7} {'max s':>7}  ok")
    for backend, (binary_name, setup, answer, shell) in setups.items():
        binary = find(binary_name)
        if binary is None:
            print(f"{backend:<10} skipped: {binary_name} is not installed (.ci/run installs it)")
            continue
        for label, script in (("one answer", answer), ("one command + answer", shell)):
            times, oks = [], []
            keys = [f"k{backend}{label[:3]}{i}" for i in range(args.repeat)]
            with tempfile.TemporaryDirectory(prefix="gitswarm-clibench-") as tmpdir, \
                    FakeAPI({k: list(script) for k in keys}) as api:
                shared = get_backend(backend) if backend == "codex-mcp" else None
                try:
                    for k in keys:
                        took, ok = _one(backend, binary, api, Path(tmpdir), k, setup, shared)
                        times.append(took)
                        oks.append(ok)
                finally:
                    if shared is not None:
                        shared.close()
            print(f"{backend:<10} {label:<22} {statistics.median(times):9.2f} {min(times):7.2f} {max(times):7.2f}  "
                  f"{sum(oks)}/{len(oks)}")
    print("codex-mcp keeps one Codex process for all attempts of an agent: its first attempt pays the start-up.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

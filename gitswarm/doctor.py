"""`gitswarm doctor`: is this machine, repository and config ready for a run?

Each check gives ok / warn / fail with a detail that says what to do. The checks run
commands (git, the agent CLIs) but decide nothing on their own: `verdict` is pure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pygit2

from gitswarm.backends import DEFAULT_BINARIES, INSTALL_HINTS

from .config import LoadedConfig, RoleConfig

# `git merge-tree --write-tree` merges task branches without a checkout.
MIN_GIT = (2, 38)
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def verdict(checks: Sequence[Check]) -> int:
    """Exit code: 1 if anything a run needs is missing, else 0."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def parse_git_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def _run(argv: list[str], cwd: str | None = None, timeout: float = 10) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)} did not answer within {timeout:.0f}s"
    except OSError as exc:
        return 126, str(exc)
    return p.returncode, (p.stdout or p.stderr).strip()


def check_git() -> Check:
    code, out = _run(["git", "--version"])
    if code != 0:
        return Check("git", FAIL, "git is not installed or not on PATH")
    version = parse_git_version(out)
    if version is None or version[:2] < MIN_GIT:
        return Check("git", FAIL, f"{out}: gitswarm needs git >= {MIN_GIT[0]}.{MIN_GIT[1]} (merge-tree --write-tree)")
    return Check("git", OK, out)


def check_libraries() -> Check:
    return Check(
        "python",
        OK,
        f"Python {sys.version.split()[0]}, pygit2 {pygit2.__version__} (libgit2 {pygit2.LIBGIT2_VERSION})",
    )


def check_repository(cwd: str) -> list[Check]:
    found = pygit2.discover_repository(cwd)
    if found is None:
        return [Check("repository", FAIL, f"{cwd} is not inside a git repository: run `git init` and commit something")]
    code, ref_format = _run(["git", "config", "--get", "extensions.refStorage"], cwd=cwd)
    if code == 0 and ref_format.strip() and ref_format.strip() != "files":
        return [Check("repository", FAIL, f"{found}: ref storage '{ref_format.strip()}' cannot be opened by libgit2; gitswarm needs the files backend (`git refs migrate --ref-format=files`)")]
    try:
        repo = pygit2.Repository(found)
    except pygit2.GitError as exc:
        return [Check("repository", FAIL, f"{found}: libgit2 cannot open it: {exc}")]
    checks = []
    workdir = repo.workdir or found
    if repo.is_bare:
        checks.append(Check("repository", FAIL, f"{found} is bare: gitswarm needs a work tree to take worktrees from"))
    else:
        checks.append(Check("repository", OK, workdir.rstrip("/")))
    if repo.head_is_unborn:
        checks.append(Check("base commit", FAIL, "HEAD has no commit yet: commit something for the swarm to start from"))
    else:
        head = repo.head
        where = head.shorthand if not repo.head_is_detached else "detached HEAD"
        checks.append(Check("base commit", OK, f"{where} at {str(head.target)[:10]}"))
    name_code, name = _run(["git", "config", "user.name"], cwd=workdir)
    mail_code, mail = _run(["git", "config", "user.email"], cwd=workdir)
    if name_code or mail_code:
        checks.append(Check("identity", WARN, "git user.name / user.email are not set: merge commits will be signed by gitswarm (set them with `git config --global user.name ...`)"))
    else:
        checks.append(Check("identity", OK, f"{name} <{mail}>"))
    return checks


def role_binary(role: RoleConfig) -> str | None:
    """The binary a role runs: its `command`, else its backend's default (None: built in)."""
    return role.command or DEFAULT_BINARIES.get(role.backend)


def resolve_binary(role: RoleConfig, base_dir: str) -> str | None:
    """The full path of the role's binary (a relative path with a slash is taken from
    the config's folder, as a run does), or None when it is not found."""
    binary = role_binary(role)
    if binary is None:
        return None
    candidate = binary
    if os.sep in binary and not os.path.isabs(binary):
        candidate = str(Path(base_dir) / binary)
    return shutil.which(candidate)


def check_backend(role: RoleConfig, base_dir: str) -> Check:
    name = f"role {role.role_id}"
    binary = role_binary(role)
    if binary is None:
        return Check(name, OK, f"{role.backend}: built in, needs no binary")
    path = resolve_binary(role, base_dir)
    if path is None:
        hint = INSTALL_HINTS.get(role.backend) if binary == DEFAULT_BINARIES.get(role.backend) else None
        fix = f"install it: {hint}" if hint else "put it on PATH or set the role's `command` to its path"
        return Check(name, FAIL, f"{role.backend}: '{binary}' not found; {fix}")
    code, out = _run([path, "--version"], timeout=20)
    version = out.splitlines()[0] if out else "?"
    if code != 0:
        return Check(name, WARN, f"{role.backend}: {path} found but `--version` failed: {version}")
    detail = f"{role.backend}: {path} ({version})"
    if role.backend == "codex-mcp":
        protocol, why = codex_protocol(path)
        if protocol is None:
            return Check(name, FAIL, f"{detail}: speaks neither `codex app-server` nor `codex mcp-server`: {why}")
        detail += f", multi-turn over `codex {protocol}`"
    return Check(name, OK, detail)


def codex_protocol(path: str) -> tuple[str | None, str]:
    """Which multi-turn protocol this codex speaks ("app-server" or "mcp-server")."""
    from gitswarm.backends import codex_mcp

    try:
        return codex_mcp.detect_protocol(path), ""
    except Exception as exc:  # the probe failing is the answer: report it
        return None, str(exc)


LIVE_PROMPT = "This is a connection check by `gitswarm doctor --live`. Reply with the single word: ok"
LIVE_TIMEOUT = 120.0


def live_check(role: RoleConfig, model: str, base_dir: str, workdir: Path) -> Check:
    """One real turn of the role's agent in `workdir` (an empty scratch repository): the
    binary, its credentials and the model answer. Costs one small model call."""
    from gitswarm.backends.base import AgentRequest, role_options
    from gitswarm.backends.registry import get_backend
    from gitswarm.model import TaskSpec

    name = f"live {role.role_id}"
    binary = role_binary(role)
    command = resolve_binary(role, base_dir) if binary else None
    if binary is not None and command is None:
        return Check(name, FAIL, f"{role.backend}: not run, '{binary}' is not found")
    missing = role.missing_env(os.environ)
    if missing:
        return Check(name, FAIL, f"{role.backend}: not run, {'; '.join(missing)}")
    request = AgentRequest(
        task=TaskSpec(id="doctor", title="connection check"), attempt=1, prompt=LIVE_PROMPT, workdir=workdir,
        role_id=role.role_id, backend=role.backend, agent_id=f"{role.role_id}-doctor", model=model or None,
        command=command, args=tuple(role.args), env=role.agent_env(os.environ), options=role_options(role),
        timeout=LIVE_TIMEOUT, heartbeat_timeout=LIVE_TIMEOUT,
    )
    backend = get_backend(role.backend)
    try:
        run = backend.start(request)
        for _ in run.events():
            pass
        result = run.result
    finally:
        backend.close()
    if not result.ok:
        return Check(name, FAIL, f"{role.backend}: one turn failed: {result.error}")
    u = result.usage
    said = (result.summary or "").strip().splitlines()[0][:80] if result.summary else "(no text)"
    return Check(name, OK, f"{role.backend}: answered {said!r} ({u.input_tokens + u.cache_read_tokens} in, "
                           f"{u.output_tokens} out, ${u.cost_usd:.4f})")


def check_live(loaded: LoadedConfig, base_dir: str) -> list[Check]:
    """`doctor --live`: one turn per distinct (backend, binary, model) of the config."""
    import tempfile

    checks: list[Check] = []
    seen: set[tuple[str, str | None, str]] = set()
    cfg = loaded.config
    for role in cfg.roles:
        model = cfg.model_for(role)
        key = (role.backend, role_binary(role), model)
        if key in seen or role.backend == "scripted":
            continue
        seen.add(key)
        with tempfile.TemporaryDirectory(prefix="gitswarm-doctor-") as tmp:
            work = Path(tmp) / "repo"
            work.mkdir()
            # A repository of its own: some CLIs insist on one, and nothing of the user's is touched.
            _run(["git", "init", "-q", str(work)])
            checks.append(live_check(role, model, base_dir, work))
    return checks


def check_config(loaded: LoadedConfig | None, base_dir: str) -> list[Check]:
    if loaded is None:
        return [Check("config", WARN, "no config given or found (swarm.yaml): `gitswarm init` writes one; `gitswarm quick` needs none")]
    cfg = loaded.config
    detail = f"{loaded.path}: {len(cfg.roles)} roles"
    if loaded.warnings:
        detail += f", {len(loaded.warnings)} keys accepted but not acted on (shown above)"
    checks = [Check("config", OK, detail)]
    seen: set[tuple[str, str | None]] = set()
    for role in cfg.roles:
        key = (role.backend, role_binary(role))
        if key in seen:
            continue
        seen.add(key)
        checks.append(check_backend(role, base_dir))
    return checks


def find_default_config(cwd: str) -> str | None:
    """The config a command uses when none is given: swarm.yaml at the repository root,
    then attoswarm's default place."""
    root = pygit2.discover_repository(cwd)
    base = Path(root).parent if root and Path(root).name == ".git" else Path(cwd)
    for rel in ("swarm.yaml", "swarm.yml", ".gitswarm.yaml", ".attocode/swarm.hybrid.yaml"):
        if (base / rel).is_file():
            return str(base / rel)
    return None

"""Every git operation the run loop needs, as small functions over the git CLI.

Why the CLI and not pygit2 here: worktrees, merges and commits are where git's own
behaviour is the point (the user's merge algorithm, hooks, filters, sparse checkout,
locks that interoperate with whatever else is running), and one process per operation
costs nothing next to an agent's minutes of work. The state store (store.py) keeps
pygit2 for its hot path.

Rules every function here keeps:
- the user's checkout (HEAD, index, work tree, their branches, their config) is never
  touched: reads use `--no-optional-locks` so not even the index's stat cache is
  refreshed, and the snapshot of uncommitted work is built in a temporary index;
- a branch checked out in any worktree is never moved or deleted by plumbing (git's
  `update-ref` would move it under that worktree's feet, research/git-state.md 6.1);
- an unexpected git failure raises GitswarmError naming the command and its stderr.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import shell
from .errors import GitswarmError, InputError

# Who signs commits gitswarm makes when the user has no identity configured.
FALLBACK_IDENTITY = ("gitswarm", "gitswarm@gitswarm.invalid")

# Variables that pin git to one repository or index. A gitswarm started from inside a
# git hook (or a shell that exported GIT_DIR) would otherwise run every command against
# that repository instead of the one passed in: they are dropped from the environment
# of every git process unless the caller sets them explicitly (snapshot's temp index).
_REPO_LOCAL_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
)

# update-ref's words for "the ref is not where you said it was": a lost race, not a fault.
_MOVED = ("but expected", "reference already exists", "unable to resolve reference", "reference is missing")
# A ref lock held by another writer. git already waited core.filesRefLockTimeout (100 ms).
_LOCKED = "File exists"
_LOCK_RETRIES = 5


# -- running git


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in _REPO_LOCAL_VARS}
    # Messages we parse ("but expected") must not be translated; never prompt anyone.
    out["LC_ALL"] = "C"
    out["LANGUAGE"] = "C"
    out["GIT_TERMINAL_PROMPT"] = "0"
    if env:
        out.update(env)
    return out


# A disk that takes no more writes, by errno and as the C library words it in the
# messages of git and libgit2 (LC_ALL=C for git; libgit2 appends strerror).
_STORAGE_FAULTS: tuple[tuple[int, str], ...] = (
    (errno.ENOSPC, "no space left on device"),
    (errno.EROFS, "read-only file system"),
    (errno.EDQUOT, "disk quota exceeded"),
)


class StorageError(GitswarmError):
    """A write the disk refused: full, read-only or over quota. Nothing already recorded
    is lost (refs move last), so the fix is the user's: make room, then run again."""

    def __init__(self, cause: str, what: str, where: Path | str, then: str = "run the command again"):
        self.cause = cause
        super().__init__(
            f"{cause} {what} in {where}: nothing recorded so far is lost; "
            f"free some space (or make the disk writable), then {then}"
        )


def storage_fault(text: str = "", path: Path | str | None = None, code: int | None = None) -> str | None:
    """Which disk fault explains a failed write, if one does: named by errno, by the
    message, or else seen on the file system at `path` (git's "couldn't write '...'"
    names no cause, and a full disk or a read-only mount is then the likely one)."""
    lowered = text.lower()
    for number, words in _STORAGE_FAULTS:
        if code == number or words in lowered:
            return words
    if path is None:
        return None
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a folder git was about to create: its file system
    try:
        fs = os.statvfs(existing)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "read-only file system"
    # root may write into the blocks reserved for it: only none at all is full for root.
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    if fs.f_blocks and free == 0:
        return "no space left on device"
    return None


_UNNAMED_WRITE_FAILURE = re.compile(r"couldn't write|could not write|unable to write|failed to write|cannot lock|"
                                    r"unable to create|could not create|unable to append|short write", re.I)


def _fail(args: Sequence[str], where: Path | str, returncode: int, stderr: str) -> GitswarmError:
    cmd = shlex.join(["git", *map(str, args)])
    detail = stderr.strip() or "(no message)"
    # The file system is looked at only when git says a write failed without saying why:
    # on a nearly full disk, a bad revision is still a bad revision.
    cause = storage_fault(detail, where if _UNNAMED_WRITE_FAILURE.search(detail) else None)
    if cause is not None:
        return StorageError(cause, f"running `git {args[0] if args else ''}`", where)
    return GitswarmError(f"`{cmd}` failed in {where} (exit {returncode}): {detail}")


def git(
    repo_dir: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd` (default: repo_dir) and return its output as text.

    `env` overrides the (cleaned) process environment. Paths that are not UTF-8 survive
    the round trip through surrogate escapes. stdin is closed unless `input` is given, so
    git never waits on a terminal.
    """
    where = cwd if cwd is not None else repo_dir
    try:
        result = subprocess.run(
            ["git", *map(str, args)],
            cwd=where,
            env=_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except FileNotFoundError as exc:
        raise GitswarmError(f"cannot run git in {where}: {exc}") from exc
    if check and result.returncode != 0:
        raise _fail(args, where, result.returncode, result.stderr)
    return result


def git_bytes(
    repo_dir: Path | str,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """Run git and return stdout as bytes: for blob contents, which need not be text."""
    try:
        result = subprocess.run(
            ["git", *map(str, args)],
            cwd=repo_dir,
            env=_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
        )
    except FileNotFoundError as exc:
        raise GitswarmError(f"cannot run git in {repo_dir}: {exc}") from exc
    if result.returncode != 0:
        raise _fail(args, repo_dir, result.returncode, result.stderr.decode("utf-8", "replace"))
    return result.stdout


def _split_z(text: str) -> list[str]:
    """Split NUL-terminated output (-z) into its fields."""
    parts = text.split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def _heads_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def run_shell(
    command: str,
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a user's shell command (worktree set-up) and capture its output.

    Not a git command, but it runs in a worktree of the repository, so the same
    variables that would pin it to another repository are dropped. `env` overrides the
    environment (the locale is left alone: it is the user's command). It runs through
    gitswarm.shell: a background child (a dev server) does not hold us up and does not
    outlive the command. On timeout the result has exit code 124, like timeout(1).
    """
    full = {k: v for k, v in os.environ.items() if k not in _REPO_LOCAL_VARS}
    full.update(env or {})
    result = shell.run(command, cwd=cwd, env=full, timeout=timeout, combine=False)
    if result.timed_out:
        note = f"\ngitswarm: `{command}` timed out after {timeout:g} s and was killed\n"
        return subprocess.CompletedProcess(command, 124, result.stdout, result.stderr + note)
    assert result.returncode is not None  # neither timed out nor stopped
    return subprocess.CompletedProcess(command, result.returncode, result.stdout, result.stderr)


# -- where we are


def repo_root(path: Path | str) -> Path:
    """The top of the work tree containing `path`: where gitswarm reads and never writes."""
    p = Path(path)
    start = p if p.is_dir() else p.parent
    if not start.is_dir():
        raise InputError(f"{path}: no such directory")
    result = git(start, "rev-parse", "--show-toplevel", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise InputError(f"{path}: not inside a git work tree ({result.stderr.strip()})")
    return Path(result.stdout.strip())


def common_dir(repo_dir: Path | str) -> Path:
    """The repository's shared git dir (the main `.git`, also from a linked worktree)."""
    out = git(repo_dir, "rev-parse", "--git-common-dir").stdout.strip()
    return (Path(repo_dir) / out).resolve()


def head(repo_dir: Path | str) -> tuple[str | None, str]:
    """(branch checked out, or None if detached; HEAD's commit). InputError if unborn:
    a run needs a commit to start from."""
    sym = git(repo_dir, "symbolic-ref", "-q", "HEAD", check=False)
    if sym.returncode not in (0, 1):
        raise _fail(["symbolic-ref", "-q", "HEAD"], repo_dir, sym.returncode, sym.stderr)
    ref = sym.stdout.strip() if sym.returncode == 0 else ""
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else None
    commit = git(repo_dir, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    if commit.returncode != 0:
        raise InputError(f"{repo_dir}: HEAD has no commit yet (make a first commit)")
    return branch, commit.stdout.strip()


def resolve_commit(repo_dir: Path | str, rev: str, what: str = "--base") -> str:
    """The full id of the commit `rev` names; InputError `<what> <rev>: not a commit`."""
    result = git(repo_dir, "rev-parse", "-q", "--verify", "--end-of-options", f"{rev}^{{commit}}", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise InputError(f"{what} {rev}: not a commit")
    return result.stdout.strip()


def resolve_commit_or_none(repo_dir: Path | str, rev: str) -> str | None:
    """The commit `rev` names, or None if it names none (a ref that may not exist yet)."""
    return rev_parse(repo_dir, f"{rev}^{{commit}}")


def list_refs(repo_dir: Path | str, prefix: str) -> list[tuple[str, str]]:
    """(ref, object id) of every ref under `prefix` (e.g. `refs/heads/attoswarm-work/R/`),
    sorted by name."""
    out = git(repo_dir, "for-each-ref", "--format=%(refname)%00%(objectname)", prefix).stdout
    refs: list[tuple[str, str]] = []
    for line in out.splitlines():
        name, _, oid = line.partition("\0")
        if name.startswith(prefix):
            refs.append((name, oid))
    return refs


def rev_list(repo_dir: Path | str, base: str, commit: str) -> list[str]:
    """Commits reachable from `commit` and not from `base` (`base..commit`), newest first:
    the commits unique to an attempt."""
    return git(repo_dir, "rev-list", f"{base}..{commit}", "--").stdout.split()


def rev_parse(repo_dir: Path | str, rev: str) -> str | None:
    """The object id `rev` names, or None (for reading refs that may not exist)."""
    result = git(repo_dir, "rev-parse", "-q", "--verify", "--end-of-options", rev, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def dirty_paths(repo_dir: Path | str) -> list[str]:
    """Paths with uncommitted changes (modified, staged, untracked; not ignored).

    For the "uncommitted changes are not included" notice. `--no-optional-locks` keeps
    status from rewriting the user's index to refresh its stat cache.
    """
    out = git(
        repo_dir, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"
    ).stdout
    fields = _split_z(out)
    paths: list[str] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if status[0] in "RC":  # a rename or copy: the next field is where it came from
            i += 1
            paths.append(fields[i])
        i += 1
    return sorted(set(paths))


def user_identity(repo_dir: Path | str) -> tuple[str, str] | None:
    """The user's committer identity, or None if they have not set one.

    "Set" means an explicit email (environment or config): git would otherwise invent one
    from the host name, which is not an identity worth putting on a run's commits. The
    name and email themselves come from `git var`, so every rule git applies (env over
    config, committer.* over user.*) applies here too.
    """
    explicit = any(os.environ.get(v) for v in ("GIT_COMMITTER_EMAIL", "EMAIL"))
    if not explicit:
        for key in ("committer.email", "user.email"):
            if git(repo_dir, "config", "--get", key, check=False).stdout.strip():
                explicit = True
                break
    if not explicit:
        return None
    result = git(repo_dir, "var", "GIT_COMMITTER_IDENT", check=False)
    match = re.match(r"^(.*?) <([^>]*)>", result.stdout)
    if result.returncode != 0 or not match:
        return None
    return match.group(1), match.group(2)


# -- the user's uncommitted work


def snapshot_uncommitted(repo_dir: Path | str, message: str) -> str | None:
    """A commit on top of HEAD holding the work tree as it is, or None if it is clean.

    Tracked changes (staged or not) and untracked files that are not ignored are
    included, exactly as they are on disk. Built in a temporary copy of the index (a
    copy, not a fresh read-tree, so git reuses the stat cache and hashes only what
    changed), so the real index, the work tree and HEAD are left byte-for-byte as they
    were. No ref points at the result; the caller decides where it goes.
    """
    root = repo_root(repo_dir)
    parent = rev_parse(root, "HEAD^{commit}")
    snap = snapshot_worktree(root, message, parent, user_identity(root) or FALLBACK_IDENTITY)
    return snap.commit


@dataclass(frozen=True)
class Snapshot:
    """A work tree as a commit: `commit` is None when nothing differs from the parent;
    `refused` are the paths git would not take into an index (left out of the commit)."""

    commit: str | None
    refused: tuple[str, ...] = ()


def snapshot_worktree(
    worktree: Path | str, message: str, parent: str | None, author: tuple[str, str],
    env: Mapping[str, str] | None = None,
) -> Snapshot:
    """The work tree as a commit on `parent`, without touching the real index, HEAD or
    any ref (the caller decides where it goes).

    Everything `git add -A` would take goes in. When git refuses the whole add (an
    invalid path such as `pkg/.GIT/config`, a nested repository with no commit), the
    paths are added in halves until the ones it refuses are found: those are left out
    and named, so one bad file never costs the agent all its other work. A stale
    `index.lock` of the real index does not matter: the index here is a temporary one.
    `env` is the worker's environment, so its excludes (files copied in) still apply.
    """
    root = Path(worktree)
    real_index = Path(git(root, "rev-parse", "--git-path", "index").stdout.strip())
    if not real_index.is_absolute():
        real_index = root / real_index
    with tempfile.TemporaryDirectory(prefix="gitswarm-index-") as tmp:
        index = Path(tmp) / "index"
        ienv = {**(env or {}), "GIT_INDEX_FILE": str(index)}
        if real_index.exists():
            # The stat cache, so only changed files are hashed; with the index's own
            # mtime (copy2), which git's racy-file check compares files against: a fresh
            # mtime would make a file edited in the second of the last checkout look clean.
            shutil.copy2(real_index, index)
        elif parent:
            git(root, "read-tree", parent, env=ienv)
        refused: tuple[str, ...] = ()
        if git(root, "add", "-A", env=ienv, check=False).returncode != 0:
            # From the parent's tree exactly (a copied index may be what is broken).
            index.unlink(missing_ok=True)
            if parent:
                git(root, "read-tree", parent, env=ienv)
            refused = _add_what_git_takes(root, ienv)
        nested = embedded_repositories(root, parent, ienv)
        for path in nested:
            git(root, "update-index", "--force-remove", "--", path.rstrip("/"), env=ienv)
        refused = tuple(sorted({*refused, *nested}))
        tree = git(root, "write-tree", env=ienv).stdout.strip()
    unchanged = git(root, "rev-parse", f"{parent}^{{tree}}").stdout.strip() if parent else empty_tree(root)
    if tree == unchanged:
        return Snapshot(None, refused)
    return Snapshot(commit_tree(root, tree, [parent] if parent else [], message, author), refused)


def embedded_repositories(worktree: Path | str, parent: str | None, env: Mapping[str, str] | None = None) -> list[str]:
    """Folders with a repository of their own that the index (in `env`) now holds as
    links to commits (`sub/`), though no `.gitmodules` entry makes them submodules: git
    stores only the commit id, which this repository does not have, and the files would
    be lost with the work tree."""
    args = ["diff-index", "--cached", "-z", "--no-renames", parent or empty_tree(worktree)]
    fields = _split_z(git(worktree, *args, env=env).stdout)
    links = [path for meta, path in zip(fields[::2], fields[1::2])
             if meta.split()[1] == "160000" and meta.split()[0] != ":160000"]
    if not links:
        return []
    modules = Path(worktree) / ".gitmodules"
    listed: set[str] = set()
    if modules.is_file():
        out = git(worktree, "config", "-f", str(modules), "--get-regexp", r"^submodule\..*\.path$", check=False).stdout
        listed = {line.split(" ", 1)[1] for line in out.splitlines() if " " in line}
    return [f"{path}/" for path in links if path not in listed]


def _add_what_git_takes(root: Path, env: Mapping[str, str]) -> tuple[str, ...]:
    """Add every changed or new path to the index in `env`, leaving out those git
    refuses; returns them. Bisection: a few refused paths cost a few adds, not one per
    file."""
    listed = git(root, "ls-files", "-z", "--others", "--exclude-standard", env=env).stdout
    listed += git(root, "ls-files", "-z", "--modified", "--deleted", env=env).stdout
    paths = list(dict.fromkeys(_split_z(listed)))
    literal = {**env, "GIT_LITERAL_PATHSPECS": "1"}
    refused: list[str] = []
    pending = [paths]
    while pending:
        batch = pending.pop()
        if not batch:
            continue
        added = git(root, "add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul", env=literal,
                    input="".join(p + "\0" for p in batch), check=False)
        if added.returncode == 0:
            continue
        if len(batch) == 1:
            refused.append(batch[0])
            continue
        half = len(batch) // 2
        pending += [batch[half:], batch[:half]]
    return tuple(sorted(refused))


def empty_tree(repo_dir: Path | str) -> str:
    """The id of the empty tree (differs between SHA-1 and SHA-256 repositories)."""
    return git(repo_dir, "hash-object", "-t", "tree", "--stdin", input="").stdout.strip()


def ensure_excluded(repo_dir: Path | str, pattern: str) -> None:
    """Add `pattern` to the repository's info/exclude once, so gitswarm's own folder
    inside the checkout (worktrees, hooks) never shows in the user's `git status`.

    info/exclude rather than .gitignore: it is not a tracked file, so the user's tree
    does not change. The common git dir is used so linked worktrees share the rule.
    """
    exclude = common_dir(repo_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = exclude.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        text = ""
    if pattern in (line.strip() for line in text.splitlines()):
        return
    prefix = "" if not text or text.endswith("\n") else "\n"
    with open(exclude, "a", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(f"{prefix}{pattern}\n")


# -- branches and worktrees


def create_branch(repo_dir: Path | str, branch: str, commit: str) -> None:
    """Create refs/heads/<branch> at `commit`, never overwriting: an existing branch at
    the same commit is fine (a resumed step), at another commit is an error."""
    ref = _heads_ref(branch)
    result = git(repo_dir, "update-ref", "-m", "gitswarm: create branch", ref, commit, "", check=False)
    if result.returncode == 0:
        return
    current = rev_parse(repo_dir, ref)
    if current is not None and current == rev_parse(repo_dir, f"{commit}^{{commit}}"):
        return
    if current is not None:
        raise GitswarmError(f"branch {branch} already exists at {current[:12]}, not at {commit[:12]}")
    raise _fail(["update-ref", ref, commit, ""], repo_dir, result.returncode, result.stderr)


def add_worktree(repo_dir: Path | str, path: Path | str, branch: str, commit: str | None) -> None:
    """Check `branch` out in a new worktree at `path`, creating it at `commit` if absent.

    With `commit=None` the branch must exist (re-attaching a worktree after a crash).
    An existing branch at another commit is an error rather than silently reused: a
    retry must not start from the previous attempt's work unless asked to. gc.auto=0 so
    the checkout never starts a gc in the user's repository.
    """
    ref = _heads_ref(branch)
    current = rev_parse(repo_dir, ref)
    if current is None:
        if commit is None:
            raise GitswarmError(f"branch {branch} does not exist")
        create_branch(repo_dir, branch, commit)
    elif commit is not None and current != rev_parse(repo_dir, f"{commit}^{{commit}}"):
        raise GitswarmError(f"branch {branch} already exists at {current[:12]}, not at {commit[:12]}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    args = ["-c", "gc.auto=0", "worktree", "add", "--quiet", str(path), ref[len("refs/heads/"):]]
    if git(repo_dir, *args, check=False).returncode != 0:
        # Most often a worktree deleted without `git worktree remove` (a crash) still
        # holds the path or the branch: forget such worktrees of ours and try once more.
        prune_worktrees(repo_dir, Path(path).parent)
        git(repo_dir, *args)


def worktrees(repo_dir: Path | str) -> list[dict[str, Any]]:
    """The repository's worktrees, from `git worktree list --porcelain -z`.

    Each dict has the porcelain's own keys, `worktree` (path), `HEAD` (commit or None),
    `branch` (refs/heads/... or None), `detached`, `bare`, `locked` and `prunable`
    (reason or None), plus the aliases `path` and `head`. The main worktree is first.
    """
    out = git(repo_dir, "worktree", "list", "--porcelain", "-z").stdout
    result: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for field in out.split("\0"):
        if field == "":
            if current is not None:
                result.append(current)
            current = None
            continue
        key, _, value = field.partition(" ")
        if key == "worktree":
            current = {"worktree": value, "path": value, "HEAD": None, "head": None, "branch": None,
                       "detached": False, "bare": False, "locked": None, "prunable": None}
        elif current is None:
            continue
        elif key == "HEAD":
            current["HEAD"] = current["head"] = value
        elif key == "branch":
            current["branch"] = value
        elif key in ("detached", "bare"):
            current[key] = True
        elif key in ("locked", "prunable"):
            current[key] = value
    if current is not None:
        result.append(current)
    return result


def _same_path(a: Path | str, b: Path | str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _busy_branches(repo_dir: Path | str) -> dict[str, str]:
    """Branches being rebased or bisected in some worktree (HEAD is detached then, but
    git still treats the branch as in use): ref -> worktree path."""
    common = common_dir(repo_dir)
    admin_dirs: list[tuple[Path, str]] = []
    for wt in worktrees(repo_dir):
        if wt["bare"]:
            continue
        gitfile = Path(wt["path"]) / ".git"
        if gitfile.is_dir():
            admin_dirs.append((gitfile, wt["path"]))
        elif gitfile.is_file():
            line = gitfile.read_text(encoding="utf-8", errors="replace").strip()
            if line.startswith("gitdir:"):
                admin = Path(line[len("gitdir:"):].strip())
                admin_dirs.append((admin if admin.is_absolute() else gitfile.parent / admin, wt["path"]))
    if not admin_dirs:
        admin_dirs.append((common, str(common)))
    busy: dict[str, str] = {}
    for admin, path in admin_dirs:
        for name in ("rebase-merge/head-name", "rebase-apply/head-name", "BISECT_START"):
            f = admin / name
            try:
                value = f.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                continue
            if value:
                busy[_heads_ref(value)] = path
    return busy


def branch_checked_out(repo_dir: Path | str, branch: str) -> str | None:
    """The path of the worktree that has `branch` checked out (or is rebasing or
    bisecting it), or None. Such a branch must not be moved by plumbing."""
    ref = _heads_ref(branch)
    for wt in worktrees(repo_dir):
        if wt["branch"] == ref:
            return str(wt["path"])
    return _busy_branches(repo_dir).get(ref)


def remove_worktree(repo_dir: Path | str, path: Path | str) -> None:
    """Remove a worktree of ours, with whatever is left in it.

    A directory already deleted (crash, `rm -rf`) is pruned instead, so its branch stops
    counting as checked out. A directory that is not one of this repository's worktrees
    is never deleted.
    """
    registered = any(_same_path(wt["path"], path) for wt in worktrees(repo_dir))
    exists = Path(path).exists()
    if registered and exists:
        git(repo_dir, "worktree", "remove", "--force", str(path))
        return
    if exists:
        raise GitswarmError(f"{path} is not a worktree of {repo_dir}: not removing it")
    prune_worktrees(repo_dir, path)


def prune_worktrees(repo_dir: Path | str, under: Path | str | None = None) -> list[str]:
    """Forget worktrees of ours whose directories are gone (a crash, an `rm -rf`), so
    their branches stop counting as checked out. Returns the paths forgotten.

    Not `git worktree prune`: that also forgets the user's own worktrees whose folder is
    only missing for now (a disk not mounted), and those are theirs. Only entries whose
    path is `under` or lies below it are dropped (None: nothing is), exactly as prune
    would drop them: the administrative folder $GIT_COMMON_DIR/worktrees/<id> goes,
    nothing else. A locked worktree is kept, as prune keeps it.
    """
    admin_root = common_dir(repo_dir) / "worktrees"
    if under is None or not admin_root.is_dir():
        return []
    limit = Path(under).resolve()
    forgotten: list[str] = []
    for admin in sorted(admin_root.iterdir()):
        try:
            dotgit = Path((admin / "gitdir").read_text().strip())
        except OSError:
            continue
        tree = dotgit.parent
        if (admin / "locked").exists() or tree.exists():
            continue
        if tree == limit or limit in tree.parents or limit in tree.resolve().parents:
            shutil.rmtree(admin, ignore_errors=True)
            forgotten.append(str(tree))
    return forgotten


def delete_branch(repo_dir: Path | str, branch: str, expected: str | None = None) -> bool:
    """Delete a branch, only if it is still at `expected` (when given).

    True if it was deleted or did not exist; False if it had moved. Refuses a branch
    checked out in a worktree: deleting it would leave that worktree on an unborn branch.
    """
    ref = _heads_ref(branch)
    where = branch_checked_out(repo_dir, ref)
    if where is not None:
        raise GitswarmError(f"branch {branch} is checked out in {where}: not deleting it")
    if rev_parse(repo_dir, ref) is None and expected is None:
        return True
    args = ["update-ref", "-m", "gitswarm: delete branch", "-d", ref] + ([expected] if expected else [])
    result = git(repo_dir, *args, check=False)
    if result.returncode == 0:
        return True
    if any(m in result.stderr for m in _MOVED):
        return False
    raise _fail(args, repo_dir, result.returncode, result.stderr)


# -- commits, diffs, merges


def commit_all(
    worktree: Path | str, message: str, env: Mapping[str, str] | None = None, *, verify: bool = True
) -> str | None:
    """Commit everything left in a worker's worktree (`git add -A` + `git commit`).

    Run with the worker's environment (worker_env) so the commit gets the agent as
    author and the trailers from the commit-msg hook. None if nothing changed; else the
    new HEAD. `verify=False` skips the hooks' gate (the caller then runs syntax_gate on
    the commit itself, to record the failure instead of leaving the files uncommitted).
    """
    git(worktree, "add", "-A", env=env)
    nested = embedded_repositories(worktree, "HEAD", env)
    if nested:
        raise GitswarmError(f"nested git repositories, not submodules: {', '.join(nested)}: git would store only "
                            "a link to a commit it does not have, and their files would be lost")
    staged = git(worktree, "diff", "--cached", "--quiet", env=env, check=False)
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        raise _fail(["diff", "--cached", "--quiet"], worktree, staged.returncode, staged.stderr)
    # Never a gc or maintenance run in the user's repository after the commit, whatever env.
    args = ["-c", "gc.auto=0", "-c", "maintenance.auto=false", "commit", "--quiet", "--file=-"]
    args += [] if verify else ["--no-verify"]
    git(worktree, *args, env=env, input=commit_text(message))
    return git(worktree, "rev-parse", "HEAD", env=env).stdout.strip()


def commit_text(message: str) -> str:
    """A message git takes: it refuses a NUL byte in one, and gitswarm's messages hold
    titles it was given (by a user, a planner); the NUL is written as `\\0` instead."""
    text = message.replace("\0", "\\0")
    return text if text.endswith("\n") else text + "\n"


def changed_paths(repo_dir: Path | str, base: str, commit: str) -> list[str]:
    """Files that differ between two commits. Renames count as both names (rename
    detection off), so a file manifest check sees where a file went and where from."""
    out = git(repo_dir, "diff-tree", "-r", "-z", "--name-only", "--no-renames", base, commit).stdout
    return sorted(set(_split_z(out)))


def is_ancestor(repo_dir: Path | str, a: str, b: str) -> bool:
    """Whether `a` is in the history of `b` (a worker branch is safe to drop once its tip
    is an ancestor of the swarm branch)."""
    result = git(repo_dir, "merge-base", "--is-ancestor", a, b, check=False)
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise _fail(["merge-base", "--is-ancestor", a, b], repo_dir, result.returncode, result.stderr)


@dataclass(frozen=True)
class MergeMessage:
    """One informational message of a merge: the paths it is about, its kind (e.g.
    `CONFLICT (contents)`, `Auto-merging`) and the human-readable text."""

    paths: tuple[str, ...]
    kind: str
    text: str


@dataclass(frozen=True)
class MergeResult:
    """A merge of two commits done on trees only. `tree` is always written; when not
    `clean` it holds conflict markers and `conflicts` lists the conflicted paths."""

    tree: str
    clean: bool
    conflicts: tuple[str, ...] = ()
    messages: tuple[MergeMessage, ...] = ()


_OID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def merge_trees(repo_dir: Path | str, ours: str, theirs: str) -> MergeResult:
    """Merge two commits with `git merge-tree --write-tree` (git >= 2.38).

    The user's own merge algorithm (ort, their merge drivers and attributes), and no
    checkout anywhere is touched: the result is only a tree in the object store. git
    2.39 exits 1 both for conflicts and for some errors (a bad revision), so a result
    counts only if stdout starts with a tree id.
    """
    args = ["merge-tree", "--write-tree", "--messages", "--name-only", "-z", ours, theirs]
    result = git(repo_dir, *args, check=False)
    fields = result.stdout.split("\0")
    if result.returncode not in (0, 1) or not _OID.match(fields[0]):
        raise _fail(args, repo_dir, result.returncode, result.stderr)
    tree = fields[0]
    i = 1
    conflicts: list[str] = []
    while i < len(fields) and fields[i] != "":
        conflicts.append(fields[i])
        i += 1
    i += 1  # the empty field ending the conflicted-paths section
    messages: list[MergeMessage] = []
    while i < len(fields) and fields[i] != "":
        try:
            n = int(fields[i])
        except ValueError:
            raise GitswarmError(f"cannot parse `git merge-tree` output near {fields[i]!r}") from None
        paths = tuple(fields[i + 1: i + 1 + n])
        kind, text = fields[i + 1 + n], fields[i + 2 + n]
        messages.append(MergeMessage(paths, kind, text))
        i += n + 3
    clean = result.returncode == 0
    return MergeResult(tree, clean, tuple(dict.fromkeys(conflicts)), tuple(messages))


def commit_tree(
    repo_dir: Path | str,
    tree: str,
    parents: Sequence[str],
    message: str,
    author: tuple[str, str],
    committer: tuple[str, str] | None = None,
    *,
    sign: bool = False,
) -> str:
    """Write a commit object (no ref moves; see cas_update_ref).

    The committer defaults to the user (who reviews and owns the swarm branch), or
    gitswarm's fallback identity if they have none. Not signed unless `sign`: a
    commit.gpgSign config would otherwise make every merge wait on a pinentry prompt.
    """
    committer = committer or user_identity(repo_dir) or FALLBACK_IDENTITY
    env = {
        "GIT_AUTHOR_NAME": author[0],
        "GIT_AUTHOR_EMAIL": author[1],
        "GIT_COMMITTER_NAME": committer[0],
        "GIT_COMMITTER_EMAIL": committer[1],
    }
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    args += ["-S" if sign else "--no-gpg-sign", "-F", "-"]
    return git(repo_dir, *args, env=env, input=commit_text(message)).stdout.strip()


def cas_update_ref(repo_dir: Path | str, ref: str, new: str, old: str | None) -> bool:
    """Move `ref` to `new` only if it is still at `old` (None: only if it does not exist).

    False when someone else moved (or created, or deleted) it first: re-read and retry.
    Refuses a branch checked out in any worktree, since plumbing would move it under
    that worktree's index and files. A lock held for longer than git's own wait and a
    few retries raises: it is most likely a stale `.lock` left by a killed process.
    """
    if ref.startswith("refs/heads/"):
        where = branch_checked_out(repo_dir, ref)
        if where is not None:
            raise GitswarmError(f"{ref} is checked out in {where}: refusing to move it")
    args = ["update-ref", "-m", "gitswarm", ref, new, old or ""]
    for attempt in range(_LOCK_RETRIES):
        result = git(repo_dir, *args, check=False)
        if result.returncode == 0:
            return True
        if _LOCKED in result.stderr and attempt + 1 < _LOCK_RETRIES:
            time.sleep(0.05 * (attempt + 1))
            continue
        if _LOCKED not in result.stderr and any(m in result.stderr for m in _MOVED):
            return False
        break
    raise _fail(args, repo_dir, result.returncode, result.stderr)


def merge_message(run_id: str, task_id: str, title: str, attempt: int, agent: Any) -> str:
    """The message of a task's merge commit on the swarm branch: a subject people read in
    `git log --oneline`, and trailers tools read (`git log --format=%(trailers)`).

    `agent` is a gitswarm.model.Agent or its display name.
    """
    name = getattr(agent, "display_name", agent)
    subject = " ".join(f"Merge task {task_id}: {title}".split())
    return (
        f"{subject}\n\n"
        f"Swarm-Run: {run_id}\n"
        f"Swarm-Task: {task_id}\n"
        f"Swarm-Attempt: {attempt}\n"
        f"Swarm-Agent: {name}\n"
    )

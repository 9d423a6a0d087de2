"""gitswarm.gitops against real repositories: the user's checkout is never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gitswarm import gitops
from gitswarm.errors import GitswarmError, InputError
from gitswarm.model import Agent

from .conftest import git, make_repo


def checkout_state(repo: Path) -> dict[str, object]:
    """Everything of the user's checkout that a run must leave alone, byte for byte."""
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts[:1]
    }
    return {
        "status": git(repo, "status", "--porcelain=v2", "--untracked-files=all"),
        "index": (repo / ".git" / "index").read_bytes(),
        "HEAD": (repo / ".git" / "HEAD").read_bytes(),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "config": (repo / ".git" / "config").read_bytes(),
        "files": files,
    }


def tree_files(repo: Path, rev: str) -> dict[str, str]:
    names = git(repo, "ls-tree", "-r", "--name-only", rev).splitlines()
    return {n: git(repo, "show", f"{rev}:{n}") for n in names}


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    """A checkout with a modified tracked file, a staged change, an untracked file, an
    ignored file, a deleted file and a file whose stat info is stale (content the same)."""
    repo = make_repo(tmp_path / "dirty", {
        "README.md": "# sample\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "x = 1\n",
        "gone.txt": "bye\n",
        "touched.txt": "same\n",
        ".gitignore": "*.log\n",
    })
    (repo / "README.md").write_text("# sample\nmodified in the work tree\n")
    (repo / "pkg" / "mod.py").write_text("x = 2\n")
    git(repo, "add", "pkg/mod.py")
    (repo / "staged_new.txt").write_text("staged\n")
    git(repo, "add", "staged_new.txt")
    (repo / "notes" / "deep").mkdir(parents=True)
    (repo / "notes" / "deep" / "untracked.txt").write_text("untracked\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "gone.txt").unlink()
    later = (repo / "touched.txt").stat().st_mtime + 100
    os.utime(repo / "touched.txt", (later, later))  # a plain `git status` would rewrite the index
    return repo


# -- snapshot of uncommitted work


def test_snapshot_holds_the_work_tree_and_leaves_the_checkout_untouched(dirty_repo: Path) -> None:
    before = checkout_state(dirty_repo)
    head = git(dirty_repo, "rev-parse", "HEAD")

    snap = gitops.snapshot_uncommitted(dirty_repo, "gitswarm: snapshot")

    assert snap is not None
    assert git(dirty_repo, "rev-parse", f"{snap}^") == head
    files = tree_files(dirty_repo, snap)
    assert files["README.md"] == "# sample\nmodified in the work tree"
    assert files["pkg/mod.py"] == "x = 2"
    assert files["staged_new.txt"] == "staged"
    assert files["notes/deep/untracked.txt"] == "untracked"
    assert "debug.log" not in files
    assert "gone.txt" not in files
    assert files["touched.txt"] == "same"
    assert git(dirty_repo, "log", "-1", "--format=%s", snap) == "gitswarm: snapshot"
    assert checkout_state(dirty_repo) == before


def test_snapshot_of_a_clean_checkout_is_none(repo: Path) -> None:
    (repo / "ignored.log").write_text("x\n")
    (repo / ".git" / "info" / "exclude").write_text("*.log\n")
    assert gitops.snapshot_uncommitted(repo, "snap") is None


def test_snapshot_takes_the_work_tree_version_of_a_staged_then_edited_file(repo: Path) -> None:
    (repo / "README.md").write_text("staged\n")
    git(repo, "add", "README.md")
    (repo / "README.md").write_text("edited after staging\n")
    snap = gitops.snapshot_uncommitted(repo, "snap")
    assert snap is not None
    assert git(repo, "show", f"{snap}:README.md") == "edited after staging"
    assert git(repo, "show", ":README.md") == "staged"  # the real index still has the staged one


def test_dirty_paths_lists_changes_but_not_ignored_files_and_leaves_the_index_alone(dirty_repo: Path) -> None:
    index = (dirty_repo / ".git" / "index").read_bytes()
    assert gitops.dirty_paths(dirty_repo) == [
        "README.md", "gone.txt", "notes/deep/untracked.txt", "pkg/mod.py", "staged_new.txt",
    ]
    assert (dirty_repo / ".git" / "index").read_bytes() == index


def test_dirty_paths_of_a_clean_checkout_is_empty(repo: Path) -> None:
    assert gitops.dirty_paths(repo) == []


# -- where we are


def test_head_branch_and_detached(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    assert gitops.head(repo) == ("main", commit)
    git(repo, "checkout", "-q", "--detach")
    assert gitops.head(repo) == (None, commit)


def test_head_of_a_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "empty")
    with pytest.raises(InputError, match="no commit"):
        gitops.head(tmp_path / "empty")


def test_resolve_commit(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    assert gitops.resolve_commit(repo, "main") == commit
    assert gitops.resolve_commit(repo, commit[:8]) == commit
    with pytest.raises(InputError, match=r"^--base nope: not a commit$"):
        gitops.resolve_commit(repo, "nope")
    with pytest.raises(InputError, match="not a commit"):
        gitops.resolve_commit(repo, "HEAD^{tree}")
    with pytest.raises(InputError, match="not a commit"):
        gitops.resolve_commit(repo, "--all")


def test_repo_root(repo: Path, tmp_path: Path) -> None:
    assert gitops.repo_root(repo / "pkg") == repo.resolve()
    assert gitops.repo_root(repo / "pkg" / "__init__.py") == repo.resolve()
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    with pytest.raises(InputError, match="not inside a git work tree"):
        gitops.repo_root(outside)


def test_git_errors_name_the_command_and_its_stderr(repo: Path) -> None:
    with pytest.raises(GitswarmError) as info:
        gitops.git(repo, "cat-file", "-p", "no-such-object")
    assert "git cat-file -p no-such-object" in str(info.value)
    assert "no-such-object" in str(info.value).split("):", 1)[1]


def test_git_ignores_an_inherited_git_dir(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_repo(tmp_path / "other", {"other.txt": "x\n"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert gitops.head(repo)[1] == git(repo, "--git-dir", str(repo / ".git"), "rev-parse", "HEAD")


def test_user_identity(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gitops.user_identity(repo) == ("Test User", "user@example.com")
    for var in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    git(repo, "config", "user.name", "Config Name")
    git(repo, "config", "user.email", "config@example.com")
    assert gitops.user_identity(repo) == ("Config Name", "config@example.com")
    git(repo, "config", "--unset", "user.email")
    assert gitops.user_identity(repo) is None


# -- exclude, branches, worktrees


def test_ensure_excluded_is_idempotent_and_creates_the_file(repo: Path) -> None:
    exclude = repo / ".git" / "info" / "exclude"
    exclude.unlink()
    (repo / ".git" / "info").rmdir()
    gitops.ensure_excluded(repo, "/.gitswarm/")
    gitops.ensure_excluded(repo, "/.gitswarm/")
    assert exclude.read_text() == "/.gitswarm/\n"
    exclude.write_text("# mine\n*.tmp")  # no final newline
    gitops.ensure_excluded(repo, "/.gitswarm/")
    assert exclude.read_text() == "# mine\n*.tmp\n/.gitswarm/\n"


def test_worktree_inside_the_repo_keeps_the_main_checkout_clean(repo: Path) -> None:
    before = checkout_state(repo)
    base = git(repo, "rev-parse", "HEAD")
    gitops.ensure_excluded(repo, "/.gitswarm/")
    wt = repo / ".gitswarm" / "worktrees" / "t1"

    gitops.add_worktree(repo, wt, "attoswarm-work/r1/t1", base)

    assert (wt / "README.md").read_text() == "# sample\n"
    assert git(repo, "rev-parse", "refs/heads/attoswarm-work/r1/t1") == base
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert gitops.branch_checked_out(repo, "attoswarm-work/r1/t1") == str(wt.resolve())
    assert gitops.branch_checked_out(repo, "refs/heads/attoswarm-work/r1/t1") == str(wt.resolve())
    assert gitops.branch_checked_out(repo, "main") == str(repo.resolve())
    listed = gitops.worktrees(repo)
    assert [w["path"] for w in listed] == [str(repo.resolve()), str(wt.resolve())]
    assert listed[1]["branch"] == "refs/heads/attoswarm-work/r1/t1" and listed[1]["head"] == base
    # ensure_excluded from a linked worktree writes to the shared exclude file
    gitops.ensure_excluded(wt, "/.other/")
    assert (repo / ".git" / "info" / "exclude").read_text().endswith("/.gitswarm/\n/.other/\n")

    gitops.remove_worktree(repo, wt)

    assert not wt.exists()
    assert gitops.branch_checked_out(repo, "attoswarm-work/r1/t1") is None
    assert [w["path"] for w in gitops.worktrees(repo)] == [str(repo.resolve())]
    after = checkout_state(repo)
    assert {k: v for k, v in after.items() if k != "files"} == {k: v for k, v in before.items() if k != "files"}


def test_add_worktree_refuses_an_existing_branch_at_another_commit(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    (repo / "x.txt").write_text("x\n")
    git(repo, "add", "x.txt")
    git(repo, "commit", "-q", "-m", "x")
    gitops.create_branch(repo, "work", base)
    with pytest.raises(GitswarmError, match="already exists"):
        gitops.add_worktree(repo, tmp_path / "wt", "work", "HEAD")
    assert not (tmp_path / "wt").exists()
    gitops.add_worktree(repo, tmp_path / "wt", "work", None)  # re-attach the existing branch
    assert git(tmp_path / "wt", "rev-parse", "HEAD") == base
    with pytest.raises(GitswarmError, match="does not exist"):
        gitops.add_worktree(repo, tmp_path / "wt2", "missing", None)


def test_remove_worktree_tolerates_a_deleted_directory(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    gitops.add_worktree(repo, wt, "work", "HEAD")
    (wt / "left-behind.txt").write_text("untracked\n")
    import shutil

    shutil.rmtree(wt)
    assert gitops.branch_checked_out(repo, "work") == str(wt.resolve())  # until pruned
    gitops.remove_worktree(repo, wt)
    assert gitops.branch_checked_out(repo, "work") is None
    gitops.remove_worktree(repo, wt)  # twice is fine


def test_remove_worktree_never_deletes_a_directory_that_is_not_a_worktree(repo: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine\n")
    with pytest.raises(GitswarmError, match="not a worktree"):
        gitops.remove_worktree(repo, stranger)
    assert (stranger / "keep.txt").read_text() == "mine\n"


def test_create_branch_is_create_only(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    gitops.create_branch(repo, "attoswarm/r1", base)
    gitops.create_branch(repo, "attoswarm/r1", base)  # same target: fine
    (repo / "x.txt").write_text("x\n")
    git(repo, "add", "x.txt")
    git(repo, "commit", "-q", "-m", "x")
    with pytest.raises(GitswarmError, match="already exists"):
        gitops.create_branch(repo, "attoswarm/r1", "HEAD")
    assert git(repo, "rev-parse", "attoswarm/r1") == base


def test_delete_branch_compare_and_swap(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    gitops.create_branch(repo, "work", base)
    assert gitops.delete_branch(repo, "work", expected="1" * 40) is False
    assert git(repo, "rev-parse", "work") == base
    assert gitops.delete_branch(repo, "work", expected=base) is True
    assert git(repo, "branch", "--list", "work") == ""
    assert gitops.delete_branch(repo, "work") is True  # already gone
    gitops.add_worktree(repo, tmp_path / "wt", "busy", base)
    with pytest.raises(GitswarmError, match="checked out"):
        gitops.delete_branch(repo, "busy", expected=base)
    assert git(repo, "rev-parse", "busy") == base


def test_a_branch_being_rebased_counts_as_checked_out(repo: Path, tmp_path: Path) -> None:
    gitops.create_branch(repo, "feature", "HEAD")
    gitops.add_worktree(repo, tmp_path / "wt", "feature", None)
    git(tmp_path / "wt", "checkout", "-q", "--detach")
    assert gitops.branch_checked_out(repo, "feature") is None
    admin = Path(git(tmp_path / "wt", "rev-parse", "--absolute-git-dir"))
    (admin / "rebase-merge").mkdir()
    (admin / "rebase-merge" / "head-name").write_text("refs/heads/feature\n")
    assert gitops.branch_checked_out(repo, "feature") == str((tmp_path / "wt").resolve())


# -- commits, diffs, merges


def commit_on(repo: Path, branch: str, files: dict[str, str], start: str = "main") -> str:
    """Make a commit on `branch` (from `start`) without leaving the checkout on it."""
    git(repo, "checkout", "-q", "-B", branch, start)
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"edit on {branch}")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return sha


def test_changed_paths_and_is_ancestor(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "mv", "README.md", "docs.md")
    (repo / "new.txt").write_text("n\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "rename")
    tip = git(repo, "rev-parse", "HEAD")
    assert gitops.changed_paths(repo, base, tip) == ["README.md", "docs.md", "new.txt"]
    assert gitops.changed_paths(repo, tip, tip) == []
    assert gitops.is_ancestor(repo, base, tip) is True
    assert gitops.is_ancestor(repo, tip, base) is False
    with pytest.raises(GitswarmError):
        gitops.is_ancestor(repo, "nope", tip)


def test_merge_trees_clean_merge_has_both_sides(repo: Path) -> None:
    ours = commit_on(repo, "ours", {"a.txt": "ours\n"})
    theirs = commit_on(repo, "theirs", {"b.txt": "theirs\n"})
    before = checkout_state(repo)

    result = gitops.merge_trees(repo, ours, theirs)

    assert result.clean and result.conflicts == ()
    files = tree_files(repo, result.tree)
    assert files["a.txt"] == "ours" and files["b.txt"] == "theirs" and files["README.md"] == "# sample"
    assert checkout_state(repo) == before


def test_merge_trees_conflict(repo: Path) -> None:
    ours = commit_on(repo, "ours", {"README.md": "ours\n", "a.txt": "a\n"})
    theirs = commit_on(repo, "theirs", {"README.md": "theirs\n"})
    before = checkout_state(repo)

    result = gitops.merge_trees(repo, ours, theirs)

    assert not result.clean
    assert result.conflicts == ("README.md",)
    assert any(m.kind.startswith("CONFLICT") and m.paths == ("README.md",) for m in result.messages)
    assert "<<<<<<<" in git(repo, "show", f"{result.tree}:README.md")
    assert checkout_state(repo) == before
    assert not (repo / ".git" / "MERGE_HEAD").exists()


def test_merge_trees_bad_revision_raises(repo: Path) -> None:
    with pytest.raises(GitswarmError, match="merge-tree"):
        gitops.merge_trees(repo, "HEAD", "no-such-branch")


def test_commit_tree_and_compare_and_swap_of_the_swarm_branch(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    theirs = commit_on(repo, "attoswarm-work/r1/t1", {"a.txt": "a\n"})
    ref = "refs/heads/attoswarm/r1"
    assert gitops.cas_update_ref(repo, ref, base, None) is True
    assert gitops.cas_update_ref(repo, ref, base, None) is False  # create-only: it exists now

    merged = gitops.merge_trees(repo, base, theirs)
    agent = Agent(id="impl-1", role="impl", backend="claude", model="sonnet")
    message = gitops.merge_message("r1", "t1", "Add a", 2, agent)
    commit = gitops.commit_tree(repo, merged.tree, [base, theirs], message, (agent.display_name, agent.email))

    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%P", commit) == (
        f"impl-1 (claude sonnet) <impl-1@gitswarm.invalid>|Test User <user@example.com>|{base} {theirs}"
    )
    assert git(repo, "log", "-1", "--format=%s", commit) == "Merge task t1: Add a"
    assert git(repo, "log", "-1", "--format=%(trailers:key=Swarm-Attempt,valueonly)", commit) == "2"

    assert gitops.cas_update_ref(repo, ref, commit, theirs) is False  # wrong old value
    assert git(repo, "rev-parse", ref) == base
    assert gitops.cas_update_ref(repo, ref, commit, base) is True
    assert git(repo, "rev-parse", ref) == commit

    git(repo, "update-ref", ref, theirs)  # someone else moves it
    assert gitops.cas_update_ref(repo, ref, base, commit) is False
    assert git(repo, "rev-parse", ref) == theirs

    git(repo, "update-ref", "-d", ref)  # or deletes it
    assert gitops.cas_update_ref(repo, ref, base, theirs) is False


def test_cas_update_ref_refuses_a_checked_out_branch(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    other = commit_on(repo, "other", {"o.txt": "o\n"})
    with pytest.raises(GitswarmError, match="checked out"):
        gitops.cas_update_ref(repo, "refs/heads/main", other, base)
    assert git(repo, "rev-parse", "main") == base
    gitops.add_worktree(repo, tmp_path / "wt", "attoswarm/r1", base)
    with pytest.raises(GitswarmError, match="checked out"):
        gitops.cas_update_ref(repo, "refs/heads/attoswarm/r1", other, base)
    assert git(repo, "rev-parse", "attoswarm/r1") == base
    assert gitops.cas_update_ref(repo, "refs/attoswarm/r1/attempts/t1/1", other, None) is True


def test_cas_update_ref_raises_on_a_stale_lock(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    gitops.create_branch(repo, "stuck", base)
    (repo / ".git" / "refs" / "heads" / "stuck.lock").write_text("")
    with pytest.raises(GitswarmError, match="stuck.lock"):
        gitops.cas_update_ref(repo, "refs/heads/stuck", base, base)


def test_commit_tree_without_a_user_identity_uses_gitswarms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    for var in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    commit = gitops.commit_tree(repo, tree, [git(repo, "rev-parse", "HEAD")], "m", ("a", "a@x"))
    assert git(repo, "log", "-1", "--format=%cn <%ce>", commit) == "gitswarm <gitswarm@gitswarm.invalid>"


def test_commit_tree_does_not_sign_by_default(repo: Path) -> None:
    git(repo, "config", "commit.gpgSign", "true")
    git(repo, "config", "gpg.program", "false")  # signing would fail
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    commit = gitops.commit_tree(repo, tree, [], "unsigned", ("a", "a@x"))
    assert "gpgsig" not in git(repo, "cat-file", "-p", commit)


def test_commit_all(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    gitops.add_worktree(repo, wt, "work", "HEAD")
    env = {"GIT_AUTHOR_NAME": "impl-1", "GIT_AUTHOR_EMAIL": "impl-1@gitswarm.invalid"}
    assert gitops.commit_all(wt, "nothing", env) is None
    (wt / "README.md").write_text("changed\n")
    (wt / "new" / "file.txt").parent.mkdir()
    (wt / "new" / "file.txt").write_text("new\n")
    (wt / "pkg" / "__init__.py").unlink()
    head = gitops.commit_all(wt, "leftovers", env)
    assert head == git(wt, "rev-parse", "HEAD") == git(repo, "rev-parse", "work")
    assert git(wt, "status", "--porcelain") == ""
    assert git(wt, "log", "-1", "--format=%an|%s") == "impl-1|leftovers"
    assert git(wt, "show", "--name-status", "--format=", "HEAD").splitlines() == [
        "M\tREADME.md", "A\tnew/file.txt", "D\tpkg/__init__.py",
    ]


def test_merge_message() -> None:
    agent = Agent(id="impl-1", role="impl", backend="claude", model="sonnet")
    assert gitops.merge_message("r1", "t1", "Add\nlogin  page", 3, agent) == (
        "Merge task t1: Add login page\n\n"
        "Swarm-Run: r1\nSwarm-Task: t1\nSwarm-Attempt: 3\nSwarm-Agent: impl-1 (claude sonnet)\n"
    )
    assert gitops.merge_message("r1", "t1", "x", 1, "impl-2").endswith("Swarm-Agent: impl-2\n")


def test_refs_and_revisions(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    tip = commit_on(repo, "attoswarm-work/r1/t1", {"a.txt": "a\n"})
    second = commit_on(repo, "attoswarm-work/r1/t1", {"b.txt": "b\n"}, start="attoswarm-work/r1/t1")
    commit_on(repo, "attoswarm-work/r10/t1", {"c.txt": "c\n"})  # another run: r10 is not r1
    assert gitops.list_refs(repo, "refs/heads/attoswarm-work/r1/") == [("refs/heads/attoswarm-work/r1/t1", second)]
    assert gitops.rev_list(repo, base, second) == [second, tip]
    assert gitops.rev_list(repo, second, second) == []
    assert gitops.resolve_commit_or_none(repo, "refs/heads/attoswarm-work/r1/t1") == second
    assert gitops.resolve_commit_or_none(repo, "refs/heads/nope") is None
    assert gitops.resolve_commit_or_none(repo, "HEAD^{tree}") is None


def test_worktrees_use_the_porcelain_keys(repo: Path, tmp_path: Path) -> None:
    gitops.add_worktree(repo, tmp_path / "wt", "work", "HEAD")
    git(tmp_path / "wt", "checkout", "-q", "--detach")
    main, wt = gitops.worktrees(repo)
    assert main["worktree"] == main["path"] == str(repo.resolve())
    assert main["branch"] == "refs/heads/main" and not main["detached"]
    assert wt["worktree"] == str((tmp_path / "wt").resolve())
    assert wt["detached"] and wt["branch"] is None and wt["HEAD"] == wt["head"] == git(repo, "rev-parse", "HEAD")


def test_run_shell(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", "/nonexistent")  # must not leak into the command
    result = gitops.run_shell("echo $GREETING; git rev-parse --show-toplevel; echo err >&2; exit 3",
                              cwd=repo, env={"GREETING": "hi"})
    assert result.returncode == 3
    assert result.stdout.splitlines() == ["hi", str(repo.resolve())]
    assert result.stderr == "err\n"


def test_run_shell_timeout_kills_the_whole_group(repo: Path) -> None:
    import time

    start = time.monotonic()
    result = gitops.run_shell("sleep 30 & echo started; sleep 30", cwd=repo, timeout=0.5)
    assert result.returncode == 124
    assert result.stdout == "started\n" and "timed out" in result.stderr
    assert time.monotonic() - start < 10  # the backgrounded sleep held the pipe open until killed


def test_add_worktree_after_a_crash_left_the_old_one_registered(repo: Path, tmp_path: Path) -> None:
    import shutil

    wt = tmp_path / "wt"
    gitops.add_worktree(repo, wt, "work", "HEAD")
    shutil.rmtree(wt)  # killed coordinator, directory cleaned by hand
    gitops.add_worktree(repo, wt, "work", "HEAD")
    assert (wt / "README.md").exists()
    gitops.add_worktree(repo, tmp_path / "elsewhere", "other", "HEAD")
    with pytest.raises(GitswarmError, match="already checked out"):
        gitops.add_worktree(repo, tmp_path / "third", "work", None)


def test_prune_forgets_only_our_missing_worktrees(tmp_path: Path) -> None:
    import shutil as _shutil

    repo = make_repo(tmp_path / "repo")
    ours = repo / ".gitswarm" / "r" / "worktrees" / "t1"
    theirs = tmp_path / "usb-disk" / "feature"
    git(repo, "worktree", "add", "-q", "-b", "attoswarm-work/r/t1", str(ours))
    git(repo, "worktree", "add", "-q", "-b", "feature", str(theirs))
    _shutil.rmtree(ours)
    _shutil.rmtree(theirs.parent)  # the user's disk is not mounted right now
    forgotten = gitops.prune_worktrees(repo, repo / ".gitswarm" / "r" / "worktrees")
    assert forgotten == [str(ours)]
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(theirs) in listed and str(ours) not in listed
    assert gitops.delete_branch(repo, "attoswarm-work/r/t1")
    assert gitops.prune_worktrees(repo, None) == []

"""The syntax gate: every checked file type, good and bad, with exact line:col."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitswarm import gates
from gitswarm.gates import SyntaxProblem, check_file, check_staged, syntax_gate

from .conftest import git, make_repo

GOOD = [
    ("ok.py", b"def f(x):\n    return {x: [1, 2]}\n"),
    ("latin.py", b"# -*- coding: latin-1 -*-\nx = '\xe9'\n"),
    ("ok.json", b'{"a": [1, 2, {"b": null}]}\n'),
    ("bom.json", b'\xef\xbb\xbf{"a": 1}'),
    ("ok.yaml", b"a: 1\nb:\n  - x\n  - y\n"),
    ("multi.yml", b"a: 1\n---\nb: 2\n"),
    ("tags.yaml", b"a: !Ref x\nb: !!python/name:material.emoji.twemoji\nc: !include other.yaml\n"),
    ("merge.yaml", b"base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n"),
    ("empty.yaml", b""),
    ("helm.yaml", b"{{- if .Values.enabled }}\nkind: Service\n{{- end }}\n"),
    ("ok.toml", b'[tool.x]\na = 1\nb = "s"\n'),
    ("notes.txt", b"\xff not checked"),
    ("data.csv", b"a,b\n1,"),
]

# (path, content, line, col, words in the message)
BAD = [
    ("open.py", b"x = (1,\n", 1, 5, "never closed"),
    ("wide.py", 'x = "\u00e9\u00e9" +* 1\n'.encode(), 1, 11, "invalid syntax"),  # columns count characters
    ("indent.py", b"def f():\n    return 1\n  x = 2\n", 3, 8, "indent"),
    ("outside.py", b"x = 1\nreturn 1\n", 2, 1, "'return' outside function"),
    ("nul.py", b"a = 1\nb\x00 = 2\n", 2, 2, "null bytes"),
    ("bytes.py", b'x = 1\ny = "\xff"\n', 2, 6, "decode"),
    ("UPPER.PY", b"(\n", 1, 1, "never closed"),
    ("value.json", b'{"a": 1,\n "b": }\n', 2, 7, "Expecting value"),
    ("comma.json", b"[1, 2,]", 1, 7, "Expecting value"),
    ("empty.json", b"", 1, 1, "Expecting value"),
    ("utf8.json", b'{"a": 1,\n "b": "\xc3"}', 2, 8, "UTF-8"),  # bytes, as it is not text
    ("flow.yaml", b"a: 1\nb: [1, 2\n", 3, 1, "flow sequence started at 2:4"),
    ("second-doc.yml", b"a: 1\n---\nb: c: d\n", 3, 5, "mapping values are not allowed"),
    ("tab.yaml", b"a:\n\tb: 1\n", 2, 1, "'\\t'"),
    ("dup.yaml", b"a: 1\nb:\n  c: 1\n  c: 2\n", 4, 3, "duplicate key 'c'"),
    ("alias.yaml", b"x: *nope\n", 1, 4, "undefined alias"),
    ("value.toml", b"a = 1\nb = \n", 2, 5, "Invalid value"),
    ("twice.toml", b"a = 1\na = 2\n", 2, 6, "Cannot overwrite"),
    ("eof.toml", b'a = "x', 1, 7, "Unterminated string"),
    ("utf8.toml", b'a = "\xff"\n', 1, 6, "UTF-8"),
]


@pytest.mark.parametrize("path,content", GOOD, ids=[g[0] for g in GOOD])
def test_good_files_pass(path: str, content: bytes) -> None:
    assert check_file(path, content) is None


@pytest.mark.parametrize("path,content,line,col,words", BAD, ids=[b[0] for b in BAD])
def test_bad_files_report_the_place(path: str, content: bytes, line: int, col: int, words: str) -> None:
    problem = check_file(path, content)
    assert problem is not None
    assert (problem.path, problem.line, problem.col) == (path, line, col), str(problem)
    assert words in problem.message


def test_problem_str() -> None:
    assert str(SyntaxProblem("a/b.py", 3, 7, "invalid syntax")) == "a/b.py:3:7: invalid syntax"


def test_toml_is_skipped_without_a_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gates, "_toml", None)
    assert check_file("bad.toml", b"a = = 1\n") is None


def _commit(repo: Path, files: dict[str, bytes | None], message: str = "c") -> str:
    for name, content in files.items():
        p = repo / name
        if content is None:
            p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_syntax_gate_checks_added_and_modified_files_from_the_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {
        "README.md": "x\n",
        "was_broken.py": "def (:\n",  # broken in base and deleted: not reported
        "still_broken.json": "{",  # broken in base and untouched: not reported
        "cfg.yaml": "a: 1\n",
    })
    base = git(repo, "rev-parse", "HEAD")
    os.symlink("missing target (", repo / "link.py")  # a symlink's "content" is its target: skipped
    tip = _commit(repo, {
        "was_broken.py": None,
        "src/good.py": b"x = 1\n",
        "src/bad.py": b"def f(:\n    pass\n",
        "cfg.yaml": b"a: [1\n",
        "data/new.json": b'{"a": }',
        "pyproject.toml": b'[project]\nname = "x"\n',
        "notes.md": b"{{ not checked",
    })
    (repo / "src" / "bad.py").write_bytes(b"fixed_in_work_tree = 1\n")  # the commit counts

    problems = syntax_gate(repo, base, tip)

    assert [str(p) for p in problems] == [
        "cfg.yaml:2:1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started at 1:4)",
        "data/new.json:1:7: Expecting value",
        "src/bad.py:1:7: invalid syntax",
    ]
    assert syntax_gate(repo, tip, tip) == []


def test_check_staged_reads_the_index_not_the_work_tree(repo: Path) -> None:
    (repo / "bad.py").write_text("x = (\n")
    (repo / "good.json").write_text("{}\n")
    git(repo, "add", "bad.py", "good.json")
    (repo / "bad.py").write_text("x = 1\n")  # fixed but not staged
    (repo / "unstaged.py").write_text("def (\n")  # not staged: not checked
    assert [str(p) for p in check_staged(repo)] == ["bad.py:1:5: '(' was never closed"]
    git(repo, "add", "bad.py")
    assert check_staged(repo) == []


def test_check_staged_honours_git_index_file(repo: Path, tmp_path: Path) -> None:
    """`git commit -a` runs pre-commit with a temporary index in GIT_INDEX_FILE."""
    (repo / "bad.py").write_text("x = (\n")
    index = tmp_path / "alt-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "read-tree", "HEAD"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "add", "bad.py"], cwd=repo, env=env, check=True)
    assert check_staged(repo) == []  # the real index has nothing staged
    assert [str(p) for p in check_staged(repo, str(index))] == ["bad.py:1:5: '(' was never closed"]
    result = subprocess.run(
        [sys.executable, "-m", "gitswarm.gates", "--staged"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "bad.py:1:5:" in result.stderr


def test_command_line(repo: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gitswarm.gates", *args], cwd=repo,
                              capture_output=True, text=True)

    assert run("--staged").returncode == 0
    (repo / "bad.json").write_text('{"a": 1,}')
    git(repo, "add", "bad.json")
    result = run("--staged")
    assert result.returncode == 1
    assert "bad.json:1:9: Expecting property name enclosed in double quotes" in result.stderr
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "commit", "-q", "-m", "bad")
    result = run(base, "HEAD")
    assert result.returncode == 1 and "bad.json:1:9:" in result.stderr
    assert run("HEAD", "HEAD").returncode == 0
    assert run("no-such-rev", "HEAD").returncode == 2

"""This machine's paths out of the text the state and gitswarm's commits keep."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gitswarm.localpaths import local_roots, strip, without_local_paths

ROOTS = (("/home/alice/src/app/", ""), ("/home/alice/", "~/"))


def test_errors_name_files_from_the_repository_root_and_home_as_tilde() -> None:
    event = {"type": "attempt_finished", "error": "`git add -A` failed in /home/alice/src/app/.gitswarm/r1/t1",
             "prompt": "/home/alice/src/app/x", "checks": [{"gate": "tests", "detail": "see /home/alice/.cache/x"}]}
    out = without_local_paths(event, ROOTS)
    assert out["error"] == "`git add -A` failed in .gitswarm/r1/t1"
    assert out["checks"][0]["detail"] == "see ~/.cache/x"
    assert out["prompt"] == event["prompt"]  # exactly what the agent had


def test_the_folder_itself_and_look_alikes() -> None:
    assert strip("in /home/alice/src/app: done", ROOTS) == "in .: done"
    assert strip("/home/alice/src/apple/x", ROOTS) == "~/src/apple/x"  # another folder, only home goes


def test_roots_are_longest_first() -> None:
    roots = local_roots("/tmp/some/repo")
    assert [len(p) for p, _ in roots] == sorted((len(p) for p, _ in roots), reverse=True)


@given(st.text())
def test_text_without_the_roots_is_unchanged(text: str) -> None:
    if "/home/alice" not in text:
        assert strip(text, ROOTS) == text

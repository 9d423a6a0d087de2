"""Helpers for tests that look at git objects directly."""

from __future__ import annotations

import pygit2


def flatten_tree(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for entry in tree:
        if entry.type_str == "tree":
            out.update(flatten_tree(repo, repo[entry.id], prefix + entry.name + "/"))
        else:
            out[prefix + entry.name] = repo[entry.id].data
    return out

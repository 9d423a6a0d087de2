"""Taking this machine's absolute paths out of text that goes into git.

The run's state and the commits gitswarm writes are meant to be pushed: git's and the
agents' messages name files by absolute path (`/home/alice/src/app/.gitswarm/...`), which
says who and where. Text kept for a reader (errors, reasons, notes, gate details,
summaries) names them from the repository root, and the home folder as `~`. What must
stay exact (the prompt an agent had, its transcript, the config a run resumes with) is
left as it is.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

Roots = tuple[tuple[str, str], ...]

# The free-text fields of events (errors, reasons, notes, gate details, summaries, progress).
TEXT_FIELDS = frozenset({"error", "reason", "text", "detail", "summary", "event"})


def local_roots(top: str) -> Roots:
    """(absolute prefix, what it becomes) for the folders that name this machine: the
    repository's work tree `top` (its files are then named from the repository root) and
    the user's home folder. Longest first, so the repository wins over a home above it."""
    found: dict[str, str] = {}
    for folder in (top, os.path.realpath(top)):
        found[folder.rstrip("/") + "/"] = ""
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        for folder in (home, os.path.realpath(home)):
            found.setdefault(folder.rstrip("/") + "/", "~/")
    return tuple(sorted(found.items(), key=lambda kv: -len(kv[0])))


def strip(text: str, roots: Roots) -> str:
    """`text` with every prefix of `roots` replaced."""
    for prefix, replacement in roots:
        if prefix in text:
            text = text.replace(prefix, replacement)
        bare = prefix.rstrip("/")
        if bare and bare in text:  # the folder itself, named without a slash after it
            text = re.sub(re.escape(bare) + r"(?![\w.-])", replacement.rstrip("/") or ".", text)
    return text


def without_local_paths(value: Any, roots: Roots, key: str | None = None) -> Any:
    """`value` (an event, or a part of one) with the absolute paths of this machine taken
    out of its free-text fields."""
    if isinstance(value, Mapping):
        return {k: without_local_paths(v, roots, k) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v, roots, key) for v in value]
    if isinstance(value, str) and key in TEXT_FIELDS:
        return strip(value, roots)
    return value

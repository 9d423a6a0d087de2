"""The dashboard's connection to one run: the state store, read only when the ref moved.

`changed()` is a ref lookup (a few microseconds), so the app can poll it several times
a second; `read()` then costs the events since the last read (the store replays them on
its cached state) instead of the whole tree. The event log is fed incrementally: the
history is walked from the tip back to the last commit already shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import itertools

import pygit2

from gitswarm.config import SwarmConfig
from gitswarm.model import RunState
from gitswarm.store import HistoryEntry, RunStore, Store


class RunSource:
    def __init__(self, repo_dir: Path | str, run_id: str, history_limit: int = 300):
        self.repo_dir = Path(repo_dir)
        self.store = Store(self.repo_dir, writer="tui")
        self.rs: RunStore = self.store.run(run_id)
        self.history_limit = history_limit
        self._read_tip: pygit2.Oid | None = None
        self._history_tip: str | None = None
        self._config: SwarmConfig | None = None

    @property
    def run_id(self) -> str:
        return self.rs.run_id

    def changed(self) -> bool:
        """Has the state ref moved since the last read()?"""
        return self.rs.tip() != self._read_tip

    def read(self) -> RunState:
        tip = self.rs.tip()
        state = self.rs.read()
        self._read_tip = tip
        return state

    def new_history(self) -> list[HistoryEntry]:
        """State commits written since the last call, oldest first (at most
        history_limit of them: the log shows the newest). The store walks lazily from
        the tip and stops at the commit already shown."""
        fresh = list(itertools.islice(self.rs.history(since=self._history_tip), self.history_limit))
        if fresh:
            self._history_tip = fresh[0].commit  # newest seen (a commit landing meanwhile waits for the next call)
        fresh.reverse()
        return fresh

    def lease(self) -> Mapping[str, Any] | None:
        return self.rs.read_lease()

    def coordinator_live(self) -> bool:
        return RunStore.lease_is_live(self.rs.read_lease())

    def config(self, state: RunState) -> SwarmConfig:
        """The run's resolved config (it never changes during a run: parsed once)."""
        if self._config is None:
            self._config = SwarmConfig.from_dict(dict(state.run.config))
        return self._config

    def read_file(self, path: str | None) -> str | None:
        """A prompt or transcript from the state tree, as text."""
        if not path:
            return None
        data = self.rs.read_file(path)
        return None if data is None else data.decode("utf-8", errors="replace")

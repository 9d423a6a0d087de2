"""What time it is, for the dashboard: injected so snapshots and tests can fix it.

Every "elapsed" and "silence" figure on screen is `now - a timestamp from the state`, so
a fixed clock makes the whole screen a function of the state ref alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Callable


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _local_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else timezone.utc


@dataclass(frozen=True)
class Clock:
    """`now()` gives an aware datetime; `tz` is the zone wall-clock times are shown in."""

    now: Callable[[], datetime] = _utc_now
    tz: tzinfo = field(default_factory=_local_zone)


def fixed_clock(at: datetime, tz: tzinfo = timezone.utc) -> Clock:
    """A clock that never moves (snapshots, tests)."""
    return Clock(now=lambda: at, tz=tz)


def parse_time(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def seconds_between(start: str | None, end: datetime) -> float | None:
    began = parse_time(start)
    return None if began is None else max(0.0, (end - began).total_seconds())


def span(seconds: float | None) -> str:
    """A short duration: 4s, 3m12s, 2h05m; '-' when unknown."""
    if seconds is None:
        return "-"
    secs = int(seconds)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


def wall(iso: str | None, tz: tzinfo) -> str:
    """HH:MM:SS of a state timestamp in the display zone."""
    t = parse_time(iso)
    return t.astimezone(tz).strftime("%H:%M:%S") if t else "--:--:--"

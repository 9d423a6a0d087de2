"""gitswarm: a git-native orchestrator for swarms of coding agents.

Every fact about a run lives in git (refs and notes); see docs/ref-layout.md.
"""

__version__ = "0.1.0"

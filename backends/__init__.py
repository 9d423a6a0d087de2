"""Agent backends (installed as gitswarm.backends): one module per agent CLI."""

# Names of the backends gitswarm knows. The config loader validates `backend:` against
# this list; the modules that run them arrive with the run loop. `attocode` and
# `opencode` are accepted for attoswarm configs (opencode runs through `command`).
KNOWN_BACKENDS: tuple[str, ...] = (
    "claude",
    "codex",
    "codex-mcp",
    "aider",
    "command",
    "scripted",
    "attocode",
    "opencode",
)

# Backends that need no model name (they run no model, or pick their own default).
MODELLESS_BACKENDS: frozenset[str] = frozenset({"scripted", "command"})

# The binary each backend runs by default, for `doctor`; None means no binary is needed.
DEFAULT_BINARIES: dict[str, str | None] = {
    "claude": "claude",
    "codex": "codex",
    "codex-mcp": "codex",
    "aider": "aider",
    "command": None,
    "scripted": None,
    "attocode": "attocode",
    "opencode": "opencode",
}

# How to install each binary, named by doctor when it is missing.
INSTALL_HINTS: dict[str, str] = {
    "claude": "npm install -g @anthropic-ai/claude-code",
    "codex": "npm install -g @openai/codex",
    "aider": "pip install aider-chat",
    "attocode": "pip install attocode",
    "opencode": "npm install -g opencode-ai",
}

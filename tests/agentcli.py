"""The real agent CLIs for end-to-end tests: where they are, and a clean environment.

`.ci/run` installs pinned versions into `.tools/` of the repository (npm for claude and
codex, a virtualenv for aider); a developer may also have them on PATH. A test that needs
one calls `require("claude")`, which skips with the reason when it is missing: CI has
them all, so there these tests always run.

Each CLI gets its own HOME (they keep sessions and config there) and only a loopback
API address, so nothing of the machine's user leaks in and nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / ".tools"
# The versions .ci/run installs (AGENT-CLIS.md was verified with these).
PINNED = {"claude": "2.1.197", "codex": "0.169.0", "aider": "0.86.2"}
_PLACES = {
    "claude": [TOOLS / "npm" / "node_modules" / ".bin" / "claude"],
    "codex": [TOOLS / "npm" / "node_modules" / ".bin" / "codex"],
    "aider": [TOOLS / "aider" / "bin" / "aider"],
}
_INSTALL = {
    "claude": "`.ci/run` installs it (npm install --prefix .tools/npm @anthropic-ai/claude-code)",
    "codex": "`.ci/run` installs it (npm install --prefix .tools/npm @openai/codex)",
    "aider": "`.ci/run` installs it (python3 -m venv .tools/aider; .tools/aider/bin/pip install aider-chat)",
}


def find(name: str) -> str | None:
    """The path of the CLI `name`: $GITSWARM_TEST_<NAME>, then .tools/, then PATH."""
    override = os.environ.get(f"GITSWARM_TEST_{name.upper()}")
    if override:
        return override if os.access(override, os.X_OK) else None
    for place in _PLACES.get(name, []):
        if os.access(place, os.X_OK):
            return str(place)
    return shutil.which(name)


def require(name: str) -> str:
    """The CLI's path, or skip the test saying which binary is missing and how to get it."""
    path = find(name)
    if path is None:
        pytest.skip(f"{name} is not installed: {_INSTALL.get(name, 'put it on PATH')}")
    return path


def claude_env(api_url: str, home: Path) -> dict[str, str]:
    """Claude Code against a fake Anthropic API at `api_url`, as root allowed to skip
    permission prompts (IS_SANDBOX), quiet, with its own HOME."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": api_url,
        "ANTHROPIC_API_KEY": "sk-ant-fake-key-for-tests",
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


def codex_env(home: Path) -> dict[str, str]:
    """Codex with its own HOME and CODEX_HOME; the API key its fake provider reads."""
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "FAKE_API_KEY": "fake-key-for-tests"}


def codex_provider_args(api_url: str, idle_timeout_ms: int = 5000) -> list[str]:
    """`-c` overrides that make codex use the fake Responses API at `api_url`, without
    retries (a fault must end the turn now) and with codex's own stream idle timeout."""
    provider = (f'{{name="fake",base_url="{api_url}/v1",wire_api="responses",env_key="FAKE_API_KEY",'
                f'request_max_retries=0,stream_max_retries=0,stream_idle_timeout_ms={idle_timeout_ms}}}')
    return ["-c", "model_provider=fake", "-c", f"model_providers.fake={provider}"]


def aider_env(api_url: str, home: Path) -> dict[str, str]:
    """Aider against a fake OpenAI API; litellm's bundled price list, never downloaded."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "OPENAI_API_KEY": "fake-key-for-tests", "OPENAI_API_BASE": f"{api_url}/v1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


__all__ = ["PINNED", "aider_env", "claude_env", "codex_env", "codex_provider_args", "find", "require"]

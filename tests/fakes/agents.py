"""Set-up for running the real agent CLIs against the fake model server.

The CLIs are installed at pinned versions by ``scripts/install-test-agents`` into a
cache outside the repository; these helpers find them and build the environment
and options that point each CLI at a :class:`~fakes.model_server.FakeModelServer`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-test-agents"


class AgentsUnavailable(Exception):
    """The pinned CLIs cannot be installed here (no npm)."""


@functools.cache
def agent_bin_dirs() -> dict[str, Path]:
    """Install (once, cached on disk) and locate the pinned CLIs: name -> bin dir.

    Raises:
        AgentsUnavailable: npm is missing, so the CLIs cannot be installed.
        RuntimeError: npm is there but the installation failed.
    """
    if shutil.which("npm") is None:
        cache = Path(
            os.environ.get("LOOPS_TEST_AGENTS_DIR", Path.home() / ".cache/loops-test-agents")
        )
        if not cache.is_dir():
            raise AgentsUnavailable("npm is not installed, so the agent CLIs cannot be installed")
    done = subprocess.run(
        [str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode == 3:
        raise AgentsUnavailable(done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"scripts/install-test-agents failed: {done.stderr[-2000:]}")
    dirs = {}
    for line in done.stdout.splitlines():
        name, _, path = line.partition("\t")
        dirs[name] = Path(path)
    return dirs


def base_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """A clean environment: our PATH with the CLI first, a throw-away HOME."""
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
    }


def claude_env(server_url: str, home: Path, bin_dir: Path) -> dict[str, str]:
    """Environment pointing Claude Code at the fake server."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        **base_env(home, bin_dir),
        "ANTHROPIC_BASE_URL": server_url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
    }


def codex_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """Environment for Codex with its own CODEX_HOME and the fake provider's key."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {**base_env(home, bin_dir), "CODEX_HOME": str(home), "FAKE_MODEL_KEY": "sk-test"}


def codex_config(server_url: str, *, retries: int = 0) -> dict[str, str]:
    """``-c`` overrides that make Codex use the fake server as its model provider."""
    provider = (
        f'{{name="fake", base_url="{server_url}/v1", env_key="FAKE_MODEL_KEY", '
        f'wire_api="responses", stream_max_retries={retries}, request_max_retries={retries}}}'
    )
    return {"model_provider": '"fake"', "model_providers.fake": provider}


def gemini_env(
    server_url: str, home: Path, bin_dir: Path, *, max_session_turns: int | None = None
) -> dict[str, str]:
    """Environment pointing Gemini CLI at the fake server with an API key.

    Writes ``~/.gemini/settings.json`` selecting API-key auth (without it 0.61.0
    rejects the run) and, when given, the session turn limit.
    """
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    if max_session_turns is not None:
        settings["model"] = {"maxSessionTurns": max_session_turns}
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    return {
        **base_env(home, bin_dir),
        "GEMINI_API_KEY": "test-key",
        "GOOGLE_GEMINI_BASE_URL": server_url,
    }


def opencode_config(server_url: str) -> dict[str, object]:
    """An OpenCode config whose ``fake/mock`` model is the fake server (chat completions)."""
    return {
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "fake",
                "options": {"baseURL": f"{server_url}/v1", "apiKey": "sk-test"},
                "models": {
                    "mock": {"name": "mock", "cost": {"input": 3, "output": 15, "cache_read": 0.3}}
                },
            }
        },
    }


def opencode_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """Environment for OpenCode with a throw-away HOME (its sessions live there)."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return base_env(home, bin_dir)

"""Sandboxed agent processes: an argv wrapper around bubblewrap (``bwrap``).

A :class:`Sandbox` turns an agent's argv and environment into the argv that runs it
under ``bwrap``: the whole file system read-only, the working directory (and any
``writable`` extra) writable, a private ``/tmp``, its own ``/proc`` and ``/dev``, a new
PID namespace that dies with the parent, the network shared or cut off, and an
environment filtered down to what the engine needs (its API key, not the user's other
secrets). :class:`~loops.engines.process.AgentProcess` applies it to every engine, so
no engine builds a sandbox of its own.

A sandbox that cannot start is a :class:`~loops.errors.SandboxUnavailable` error,
never a silent run without one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from loops import errors

#: environment variables an agent keeps by default (shell basics, loops' own, the
#: engines' keys and settings); everything else is dropped
DEFAULT_ENV_KEEP: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "SHELL",
    "LOOP_*", "QUEUE_API_TOKEN", "WORKER_API_BASE_URL",
    "ANTHROPIC_*", "CLAUDE_*", "OPENAI_*", "CODEX_*", "GEMINI_*", "GOOGLE_API_KEY",
    "OPENCODE_*", "OLLAMA_*", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
)  # fmt: skip
#: environment variables a check command keeps: no engine keys and no queue token (a
#: test run needs neither, and it runs code the agent wrote)
CHECK_ENV_KEEP: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "SHELL",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
)  # fmt: skip
#: the sandbox kinds ``--sandbox`` accepts
KINDS: tuple[str, ...] = ("none", "bwrap")
#: the ``--check-network`` values: share the host's network, or none at all
NETWORKS: tuple[str, ...] = ("shared", "none")
#: why ``--sandbox docker`` is refused
DOCKER_UNSUPPORTED = (
    "docker is not supported: loops has no Docker sandbox, it confines agents and checks "
    "with bubblewrap only; use bwrap (see SECURITY.md)"
)
#: the install command shown when bwrap is missing
INSTALL_HINT = "apt-get install bubblewrap (Debian/Ubuntu) or dnf install bubblewrap"


@dataclasses.dataclass(frozen=True, slots=True)
class Sandbox:
    """How to confine one agent process.

    Attributes:
        network: share the host's network (the model API must be reachable); ``False``
            gives the process a network namespace with nothing in it.
        writable: extra paths the process may write besides its working directory.
        env_keep: names (``fnmatch`` patterns) of environment variables to keep.
        hidden: folders replaced by an empty tmpfs (the user's home and the other
            homes by default, where keys and credentials live); the working directory,
            ``writable`` paths and the agent's own installation stay visible inside them.
    """

    network: bool = True
    writable: tuple[Path, ...] = ()
    env_keep: tuple[str, ...] = DEFAULT_ENV_KEEP
    hidden: tuple[Path, ...] = dataclasses.field(
        default_factory=lambda: (Path.home(), Path("/root"), Path("/home"))
    )

    @classmethod
    def parse(cls, kind: str | None, *, network: bool = True) -> Sandbox | None:
        """The sandbox a ``--sandbox`` value names (``none``/``None``: no sandbox).

        Raises:
            ConfigError: an unknown kind, or ``docker`` (no Docker support).
        """
        if kind is None or kind == "none":
            return None
        if kind == "bwrap":
            return cls(network=network)
        if kind == "docker":
            raise errors.ConfigError(DOCKER_UNSUPPORTED)
        raise errors.ConfigError(f"unknown sandbox {kind!r}; use one of: {', '.join(KINDS)}")

    def for_check(self, *, network: bool) -> Sandbox:
        """This sandbox as a check command gets it: ``network`` and :data:`CHECK_ENV_KEEP`.

        The check runs code the agent wrote (its tests), and needs neither the model API
        nor its key: a security-minded default cuts the network and drops the keys.
        """
        return dataclasses.replace(self, network=network, env_keep=CHECK_ENV_KEEP)

    def filter_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` reduced to the variables :attr:`env_keep` names."""
        return {
            key: value
            for key, value in env.items()
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in self.env_keep)
        }

    def wrap(self, argv: Sequence[str], *, cwd: Path) -> list[str]:
        """The argv that runs ``argv`` (``argv[0]`` resolved) inside the sandbox.

        Raises:
            SandboxUnavailable: bwrap is missing or cannot create its namespaces here.
        """
        bwrap = require_bwrap()
        work = str(Path(cwd).resolve())
        wrapped = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        hidden = sorted({str(p.resolve()) for p in self.hidden if p.is_dir()} | {"/tmp"})
        for folder in hidden:
            wrapped += ["--tmpfs", folder]
        for keep in _program_folders(argv):
            if any(keep.is_relative_to(h) for h in hidden):
                wrapped += ["--ro-bind", str(keep), str(keep)]
        wrapped += ["--bind", work, work]
        for extra in self.writable:
            resolved = str(Path(extra).resolve())
            wrapped += ["--bind", resolved, resolved]
        wrapped += ["--unshare-pid", "--die-with-parent", "--chdir", work]
        if not self.network:
            wrapped.append("--unshare-net")
        return [*wrapped, "--", *argv]


#: interpreters whose first argument is the agent's program
_INTERPRETERS = ("python", "node", "bun", "deno")


def _program_folders(argv: Sequence[str]) -> list[Path]:
    """The agent's own installation, kept visible (read-only) inside hidden folders.

    That is the folder above ``argv[0]``'s, both as written (a virtualenv keeps its
    ``bin/python`` as a link into another installation) and resolved (e.g. an npm
    prefix), the same for the interpreter its ``#!`` line names (a virtualenv's
    ``bin/pytest``), and, when ``argv[0]`` is an interpreter, the folder of the script
    it runs. The other arguments (files the agent is told about) get no such exception.
    """
    program = Path(argv[0])
    folders = [hop.parent.parent for hop in _link_chain(program)]
    interpreter = _shebang_interpreter(program)
    if interpreter is not None:
        folders += [hop.parent.parent for hop in _link_chain(interpreter)]
    if (
        len(argv) > 1
        and program.name.startswith(_INTERPRETERS)
        and not argv[1].startswith("-")
        and Path(argv[1]).is_file()
    ):
        script = Path(argv[1])
        folders += [script.absolute().parent, script.resolve().parent]
    return list(dict.fromkeys(folders))


def _link_chain(path: Path, *, max_hops: int = 40) -> list[Path]:
    """``path`` and every link it goes through to the file itself, as absolute paths.

    A link inside a hidden folder must stay visible too, not only the file it ends at
    (a ``python`` linked to a virtualenv's ``bin/python`` under /tmp, linked in turn to
    the installation's).
    """
    hops = [path.absolute()]
    while hops[-1].is_symlink() and len(hops) <= max_hops:
        target = Path(os.readlink(hops[-1]))
        hops.append(Path(os.path.normpath(hops[-1].parent / target)))
    hops.append(path.resolve())
    return hops


def _shebang_interpreter(program: Path) -> Path | None:
    """The interpreter a script's ``#!`` line runs (``env NAME`` looked up on PATH)."""
    try:
        with program.open("rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        names = [word for word in words[1:] if not word.startswith("-")]
        found = shutil.which(names[0]) if names else None
        return None if found is None else Path(found)
    return Path(words[0]) if os.path.isabs(words[0]) else None


def parse_network(value: str) -> bool:
    """Whether a ``--check-network`` value shares the network (``shared``) or not (``none``).

    Raises:
        ConfigError: any other value.
    """
    if value not in NETWORKS:
        raise errors.ConfigError(
            f"unknown check network {value!r}; use one of: {', '.join(NETWORKS)}"
        )
    return value == "shared"


@functools.cache
def require_bwrap() -> str:
    """The path of a working ``bwrap`` (probed once per process).

    Raises:
        SandboxUnavailable: it is not installed, or cannot start a sandbox here (no
            user namespaces, a seccomp policy...), with bwrap's own message.
    """
    found = shutil.which("bwrap")
    if found is None:
        raise errors.SandboxUnavailable(
            f"--sandbox bwrap needs bubblewrap, which is not installed: {INSTALL_HINT}"
        )
    probe = subprocess.run(
        [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
         "--", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "no reason"
        raise errors.SandboxUnavailable(
            f"bubblewrap cannot start a sandbox here ({reason}); enable unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1) or run without --sandbox"
        )
    return found

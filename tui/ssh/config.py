"""Settings of ``qpc serve-ssh``, parsed once at the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SshServeConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SshServeConfig:
    """Everything the SSH front end needs; every limit has a default."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 2222
    """TCP port (0: a free one, printed)."""
    state_dir: Path
    """Host key, one profile per SSH key, and the embedded node's data."""
    server: str | None = None
    """``HOST:PORT`` of the node; None: the embedded node under ``state_dir``."""
    server_fingerprint: str | None = None
    """Expected key of ``server`` (None: the key it presents at start, printed)."""
    max_sessions: int = 200
    """Sessions (interactive and exec) open at once, over all keys."""
    max_sessions_per_key: int = 5
    """Sessions open at once per SSH key."""
    idle_timeout_s: float = 3600.0
    """Close a session after this long without input from the client (0: never)."""
    auth_rate: float = 1.0
    """Authentication attempts per second allowed per source address (refill rate)."""
    auth_burst: int = 10
    """Authentication attempts a source address may make at once."""
    login_timeout_s: float = 30.0
    """Time a connection has to authenticate."""
    metrics_host: str | None = None
    """Serve Prometheus metrics on this address (None: no metrics endpoint)."""
    metrics_port: int = 0
    """Metrics port."""
    child_env: tuple[tuple[str, str], ...] = ()
    """Extra environment for session processes (e.g. ``QPC_KDF=fast`` in tests)."""

    @property
    def profiles_dir(self) -> Path:
        """One profile directory per SSH key fingerprint."""
        return self.state_dir / "profiles"

    @property
    def host_key_path(self) -> Path:
        """The server's persistent Ed25519 host key (0600)."""
        return self.state_dir / "ssh_host_ed25519_key"

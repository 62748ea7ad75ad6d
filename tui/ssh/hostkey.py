"""The server's persistent host key: generated on first run, mode 0600."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from proto import files

__all__ = ["load_or_create_host_key"]


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Load the Ed25519 host key at ``path``, creating it (0600, dir 0700) if absent.

    Raises:
        ConfigError: the file exists but is not a private key, or is readable by others.
    """
    from proto.errors import ConfigError

    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        try:
            return asyncssh.read_private_key(path)
        except (asyncssh.KeyImportError, OSError) as exc:
            raise ConfigError(f"cannot read the host key {path}: {exc}") from None
    files.private_dir(path.parent)
    key = asyncssh.generate_private_key("ssh-ed25519")
    files.write_private(path, key.export_private_key())
    return key

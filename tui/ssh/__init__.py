"""``qpc serve-ssh``: the TUI served over SSH, one process per session, identity by key."""

"""Client engine shared by the TUI and the CLI (no drawing here)."""

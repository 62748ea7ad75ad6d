"""The TUI's widgets: channel list, message log, composer, member list, panes."""

"""The TUI's screens: welcome/login, main, help, info panes and dialogs."""

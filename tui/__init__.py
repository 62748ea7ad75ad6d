"""quicnprotochat terminal client: Textual app, client engine and CLI."""

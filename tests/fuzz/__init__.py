"""Fuzzing every decoder of outside bytes (short run in the suite, long run: scripts/fuzz)."""

"""Node services (auth, keys, delivery, misc) and the shared node context."""

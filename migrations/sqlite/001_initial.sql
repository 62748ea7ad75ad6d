-- quicnprotochat node, SQLite schema version 1.
-- Never edit this file once landed: add a new numbered migration instead.

-- Node-wide secrets created once: the OPAQUE server setup and the key that
-- derives decoy password files for unknown users.
CREATE TABLE node_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

-- One row per account; usernames are stored normalised (NFKC, case-folded).
CREATE TABLE accounts (
    username   TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
) STRICT;

-- The OPAQUE password file (server-side registration record) per account.
CREATE TABLE opaque_records (
    username      TEXT PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    password_file BLOB NOT NULL
) STRICT;

-- Session tokens are stored only as SHA-256(token).
CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    device_id  BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);

-- A device: Ed25519 identity key (its id), X-Wing public key, signature by
-- the identity key over the X-Wing key, and SHA-256 of its delivery access key.
CREATE TABLE devices (
    device_id       BLOB PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hybrid_key      BLOB NOT NULL,
    signature       BLOB NOT NULL,
    access_key_hash BLOB,
    created_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_by_user ON devices (username);

-- One-time KeyPackages, handed out once each (oldest first).
CREATE TABLE key_packages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id BLOB NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    package   BLOB NOT NULL
) STRICT;
CREATE INDEX key_packages_by_device ON key_packages (device_id, id);

-- The last-resort KeyPackage per device, never consumed.
CREATE TABLE last_resort_key_packages (
    device_id BLOB PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    package   BLOB NOT NULL
) STRICT;

-- Inboxes: one per recipient device. No sender column on purpose.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  BLOB NOT NULL,
    channel_id BLOB NOT NULL,
    payload    BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_by_recipient ON messages (recipient, id);
CREATE INDEX messages_by_age ON messages (created_ms);

-- Channels known to the node only by id and current MLS epoch.
CREATE TABLE channels (
    channel_id BLOB PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;

-- One ciphertext, N cursors: channel messages stored once, referenced per inbox.
-- Never edit this file once landed: add a new numbered migration instead.

-- A channel message (MLS application message, commit or Welcome) stored once.
-- It lives while an inbox entry refers to it, or until retention ends.
CREATE TABLE channel_payloads (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id BLOB NOT NULL,
    payload    BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX channel_payloads_by_age ON channel_payloads (created_ms);

-- An inbox entry either holds its payload (payload_id NULL) or refers to a
-- channel payload (then its own payload and channel_id are empty).
ALTER TABLE messages ADD COLUMN payload_id INTEGER REFERENCES channel_payloads (id);
CREATE INDEX messages_by_payload ON messages (payload_id) WHERE payload_id IS NOT NULL;

-- The channel's post capability: SHA-256 of a secret the members derive from
-- the MLS exporter of epoch key_epoch. committer: the device whose commit made
-- the current epoch, the only one that may set its key. All NULL: a channel
-- made by enqueueCommit, without capabilities.
ALTER TABLE channels ADD COLUMN key_hash BLOB;
ALTER TABLE channels ADD COLUMN key_epoch INTEGER;
ALTER TABLE channels ADD COLUMN committer BLOB;

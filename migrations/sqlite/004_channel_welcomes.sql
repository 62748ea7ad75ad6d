-- Welcomes by reference: the shared parts of one epoch's Welcome (the split
-- Welcome's encrypted GroupInfo and the sealed ratchet tree) stored once; each
-- joiner's inbox entry holds only its own EncryptedGroupSecrets and refers to
-- the row. Never edit this file once landed: add a new numbered migration.
CREATE TABLE channel_welcomes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id   BLOB NOT NULL,
    epoch        INTEGER NOT NULL,
    group_info   BLOB NOT NULL,
    ratchet_tree BLOB NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (channel_id, epoch)
) STRICT;
CREATE INDEX channel_welcomes_by_age ON channel_welcomes (created_ms);

-- A joiner's Welcome entry refers to the shared parts it needs; they live
-- while such an entry does (deleted with the last one acked) or until retention.
ALTER TABLE messages ADD COLUMN welcome_id INTEGER REFERENCES channel_welcomes (id);
CREATE INDEX messages_by_welcome ON messages (welcome_id) WHERE welcome_id IS NOT NULL;

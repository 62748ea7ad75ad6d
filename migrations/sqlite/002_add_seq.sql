-- Per-inbox delivery sequence numbers.
-- Never edit this file once landed: add a new numbered migration instead.

ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;

-- The last seq handed out per inbox. Kept apart from messages so a seq is
-- never reused after the inbox was acked empty.
CREATE TABLE delivery_seq_counters (
    recipient BLOB PRIMARY KEY,
    last_seq  INTEGER NOT NULL
) STRICT;

-- Existing messages get seqs 1..n per inbox in arrival order.
UPDATE messages SET seq = (
    SELECT COUNT(*) FROM messages AS older
    WHERE older.recipient = messages.recipient AND older.id <= messages.id
);
INSERT INTO delivery_seq_counters (recipient, last_seq)
    SELECT recipient, MAX(seq) FROM messages GROUP BY recipient;

DROP INDEX messages_by_recipient;
CREATE UNIQUE INDEX messages_by_recipient_seq ON messages (recipient, seq);

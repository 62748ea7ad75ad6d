-- Tree deltas (docs/PROTOCOL.md, "Tree deltas"): each channel's chain of
-- sealed ratchet-tree parts, one per epoch: a base (the whole tree) or a delta
-- from the previous epoch's tree. A Welcome by reference now stores an empty
-- channel_welcomes.ratchet_tree and its joiner fetches the latest base at or
-- before its epoch plus the deltas after it; rows stored before this
-- migration keep their whole tree there.
-- Never edit this file once landed: add a new numbered migration.
CREATE TABLE channel_tree_parts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id BLOB NOT NULL,
    epoch      INTEGER NOT NULL,
    base       INTEGER NOT NULL,  -- 1: whole tree, 0: delta from epoch - 1
    size       INTEGER NOT NULL,  -- length(data), read without the blob
    data       BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (channel_id, epoch)
) STRICT;
CREATE INDEX channel_tree_parts_by_age ON channel_tree_parts (created_ms);

-- Tree deltas (the PostgreSQL side of sqlite/005_tree_parts.sql;
-- docs/PROTOCOL.md, "Tree deltas"): each channel's chain of sealed
-- ratchet-tree parts, one per epoch: a base (the whole tree) or a delta from
-- the previous epoch's tree. A Welcome by reference now stores an empty
-- channel_welcomes.ratchet_tree; rows stored before keep their whole tree.
-- Never edit this file once landed: add a new numbered migration instead.
--
-- Lock order as in 002: the channel row, then inbox counters (by recipient).

CREATE TABLE channel_tree_parts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id BYTEA NOT NULL,
    epoch      BIGINT NOT NULL,
    base       SMALLINT NOT NULL,  -- 1: whole tree, 0: delta from epoch - 1
    size       BIGINT NOT NULL,    -- length(data), read without the blob
    data       BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (channel_id, epoch)
);
CREATE INDEX channel_tree_parts_by_age ON channel_tree_parts (created_ms);
ALTER TABLE channel_tree_parts ALTER COLUMN data SET STORAGE EXTERNAL;

-- Delete the parts that are no longer live: of p_channel, or (NULL) of every
-- channel among the parts stored before p_idle_before. A part is live while it
-- is in its channel's current chain (from the latest base on, the chain
-- reaches the channel's epoch, and the channel committed at or after
-- p_idle_before) or a stored Welcome by reference needs it (its epoch lies
-- between the latest base at or before the Welcome's epoch and that epoch).
CREATE FUNCTION qpc_prune_tree_parts(p_channel BYTEA, p_idle_before BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    DELETE FROM channel_tree_parts AS p
    WHERE (CASE WHEN p_channel IS NULL THEN p.created_ms < p_idle_before
                ELSE p.channel_id = p_channel END)
    AND NOT COALESCE(
        p.epoch >= (SELECT max(b.epoch) FROM channel_tree_parts AS b
                    WHERE b.channel_id = p.channel_id AND b.base = 1)
        AND EXISTS (SELECT 1 FROM channels AS c JOIN channel_tree_parts AS t
                    ON t.channel_id = c.channel_id AND t.epoch = c.epoch
                    WHERE c.channel_id = p.channel_id AND c.updated_ms >= p_idle_before),
        false)
    AND NOT EXISTS (
        SELECT 1 FROM channel_welcomes AS w
        WHERE w.channel_id = p.channel_id AND w.epoch >= p.epoch AND length(w.ratchet_tree) = 0
        AND NOT EXISTS (SELECT 1 FROM channel_tree_parts AS b
                        WHERE b.channel_id = p.channel_id AND b.base = 1
                        AND b.epoch > p.epoch AND b.epoch <= w.epoch));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- qpc_commit_channel (002) or, with p_by_ref, qpc_commit_channel_parts (003)
-- with an empty whole tree, then the tree part of p_epoch + 1: p_tree_kind -1
-- none (breaks the chain), 0 a delta, 1 a base. A delta needs the chain to
-- hold the part of p_epoch and to stay within p_max_deltas deltas and
-- greatest(base bytes, p_min_budget) delta bytes after its base, else QP005
-- and nothing is stored (one statement). Returns the commit seqs followed by
-- the joiners' seqs.
CREATE FUNCTION qpc_commit_channel_tree(
    p_channel BYTEA, p_epoch BIGINT, p_key_hash BYTEA, p_committer BYTEA, p_commit BYTEA,
    p_members BYTEA[], p_welcome BYTEA, p_joiners BYTEA[], p_by_ref BOOLEAN,
    p_group_info BYTEA, p_entries BYTEA[], p_tree BYTEA, p_tree_kind SMALLINT,
    p_max_deltas BIGINT, p_min_budget BIGINT, p_now BIGINT, p_max_depth BIGINT, p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    seqs BIGINT[];
    base_epoch BIGINT;
    base_size BIGINT;
    n BIGINT;
    total BIGINT;
BEGIN
    IF p_by_ref THEN
        seqs := qpc_commit_channel_parts(p_channel, p_epoch, p_key_hash, p_committer, p_commit,
            p_members, p_group_info, '\x'::BYTEA, p_joiners, p_entries, p_now, p_max_depth,
            p_origin);
    ELSE
        seqs := qpc_commit_channel(p_channel, p_epoch, p_key_hash, p_committer, p_commit,
            p_members, p_welcome, p_joiners, p_now, p_max_depth, p_origin);
    END IF;
    -- the channel row is locked (FOR UPDATE) by the commit above
    IF p_tree_kind = 0 THEN
        SELECT epoch, size INTO base_epoch, base_size FROM channel_tree_parts
            WHERE channel_id = p_channel AND base = 1 AND epoch <= p_epoch
            ORDER BY epoch DESC LIMIT 1;
        IF base_epoch IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'QP005',
                MESSAGE = 'no tree base for this channel: send the whole tree';
        END IF;
        SELECT count(*), COALESCE(sum(size), 0) INTO n, total FROM channel_tree_parts
            WHERE channel_id = p_channel AND base = 0 AND epoch > base_epoch AND epoch <= p_epoch;
        IF n <> p_epoch - base_epoch THEN
            RAISE EXCEPTION USING ERRCODE = 'QP005',
                MESSAGE = 'the tree chain is broken: send the whole tree';
        END IF;
        IF n + 1 > p_max_deltas OR total + length(p_tree) > greatest(base_size, p_min_budget) THEN
            RAISE EXCEPTION USING ERRCODE = 'QP005',
                MESSAGE = 'the tree chain is long: send the whole tree';
        END IF;
    END IF;
    IF p_tree_kind >= 0 THEN
        INSERT INTO channel_tree_parts (channel_id, epoch, base, size, data, created_ms)
            VALUES (p_channel, p_epoch + 1, p_tree_kind, length(p_tree), p_tree, p_now)
            ON CONFLICT (channel_id, epoch) DO UPDATE SET base = excluded.base,
                size = excluded.size, data = excluded.data, created_ms = excluded.created_ms;
    END IF;
    IF p_tree_kind <> 0 THEN
        PERFORM qpc_prune_tree_parts(p_channel, 0);
    END IF;
    RETURN seqs;
END $$;

-- 003's ack, and the tree parts the deleted Welcomes needed.
CREATE OR REPLACE FUNCTION qpc_ack(p_recipient BYTEA, p_upto BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    shared BIGINT[];
    welcomes BIGINT[];
    chans BYTEA[];
    c BYTEA;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH gone AS (
        DELETE FROM messages WHERE recipient = p_recipient AND seq <= p_upto
        RETURNING payload_id, welcome_id
    )
    SELECT count(*), array_agg(DISTINCT payload_id) FILTER (WHERE payload_id IS NOT NULL),
           array_agg(DISTINCT welcome_id) FILTER (WHERE welcome_id IS NOT NULL)
        INTO n, shared, welcomes FROM gone;
    IF shared IS NOT NULL THEN
        PERFORM 1 FROM channel_payloads WHERE id = ANY (shared) ORDER BY id FOR UPDATE;
        DELETE FROM channel_payloads AS p WHERE p.id = ANY (shared)
            AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.payload_id = p.id);
    END IF;
    IF welcomes IS NOT NULL THEN
        PERFORM 1 FROM channel_welcomes WHERE id = ANY (welcomes) ORDER BY id FOR UPDATE;
        WITH gone AS (
            DELETE FROM channel_welcomes AS w WHERE w.id = ANY (welcomes)
                AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.welcome_id = w.id)
            RETURNING w.channel_id
        )
        SELECT array_agg(DISTINCT channel_id) INTO chans FROM gone;
        IF chans IS NOT NULL THEN
            FOREACH c IN ARRAY chans LOOP
                PERFORM qpc_prune_tree_parts(c, 0);
            END LOOP;
        END IF;
    END IF;
    RETURN n;
END $$;

-- 003's purge, and the tree parts no Welcome needs whose chain is old or idle.
CREATE OR REPLACE FUNCTION qpc_purge_messages(p_before BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM messages WHERE created_ms < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM channel_payloads AS p WHERE p.created_ms < p_before
        AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.payload_id = p.id);
    DELETE FROM channel_welcomes AS w WHERE w.created_ms < p_before
        AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.welcome_id = w.id);
    PERFORM qpc_prune_tree_parts(NULL, p_before);
    RETURN n;
END $$;

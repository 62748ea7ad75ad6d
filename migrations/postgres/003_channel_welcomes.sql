-- Welcomes by reference (the PostgreSQL side of sqlite/004_channel_welcomes.sql;
-- docs/PROTOCOL.md, "Welcomes by reference"): the shared parts of one epoch's
-- Welcome (the split Welcome's encrypted GroupInfo and the sealed ratchet tree)
-- stored once; each joiner's inbox entry holds only its own
-- EncryptedGroupSecrets and refers to the row.
-- Never edit this file once landed: add a new numbered migration instead.
--
-- Lock order as in 002: the channel row, then inbox counters (by recipient).

CREATE TABLE channel_welcomes (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id   BYTEA NOT NULL,
    epoch        BIGINT NOT NULL,
    group_info   BYTEA NOT NULL,
    ratchet_tree BYTEA NOT NULL,
    created_ms   BIGINT NOT NULL,
    UNIQUE (channel_id, epoch)
);
CREATE INDEX channel_welcomes_by_age ON channel_welcomes (created_ms);
ALTER TABLE channel_welcomes ALTER COLUMN group_info SET STORAGE EXTERNAL;
ALTER TABLE channel_welcomes ALTER COLUMN ratchet_tree SET STORAGE EXTERNAL;

-- A joiner's Welcome entry refers to the shared parts it needs; they live
-- while such an entry does (deleted with the last one acked) or until retention.
ALTER TABLE messages ADD COLUMN welcome_id BIGINT REFERENCES channel_welcomes (id);
CREATE INDEX messages_by_welcome ON messages (welcome_id) WHERE welcome_id IS NOT NULL;

-- qpc_commit_channel (002) for the commit, then the Welcome by reference: the
-- shared parts once for epoch p_epoch + 1, p_entries[i] for p_joiners[i]. All
-- or nothing (one statement); a full joiner inbox is QP002. Every inbox is
-- locked up front (after the channel row), in one sorted pass.
-- Returns the commit seqs followed by the joiners' seqs.
CREATE FUNCTION qpc_commit_channel_parts(
    p_channel BYTEA, p_epoch BIGINT, p_key_hash BYTEA, p_committer BYTEA, p_commit BYTEA,
    p_members BYTEA[], p_group_info BYTEA, p_tree BYTEA, p_joiners BYTEA[], p_entries BYTEA[],
    p_now BIGINT, p_max_depth BIGINT, p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    commit_seqs BIGINT[];
    welcome_seqs BIGINT[] := '{}';
    wid BIGINT;
    cur BIGINT;
    r BYTEA;
    k BIGINT;
    i INT;
BEGIN
    PERFORM 1 FROM channels WHERE channel_id = p_channel FOR UPDATE;
    PERFORM qpc_lock_inboxes(p_members || p_joiners);
    commit_seqs := qpc_commit_channel(p_channel, p_epoch, p_key_hash, p_committer, p_commit,
        p_members, '\x'::BYTEA, '{}', p_now, p_max_depth, p_origin);
    IF cardinality(p_joiners) IS NULL OR cardinality(p_joiners) = 0 THEN
        RETURN commit_seqs;
    END IF;
    FOR r, k IN SELECT u, count(*) FROM unnest(p_joiners) AS u GROUP BY u LOOP
        IF qpc_depth(r) + k > p_max_depth THEN
            RAISE EXCEPTION USING ERRCODE = 'QP002', MESSAGE = 'a recipient inbox is full';
        END IF;
    END LOOP;
    INSERT INTO channel_welcomes (channel_id, epoch, group_info, ratchet_tree, created_ms)
        VALUES (p_channel, p_epoch + 1, p_group_info, p_tree, p_now)
        ON CONFLICT (channel_id, epoch) DO UPDATE SET group_info = excluded.group_info,
            ratchet_tree = excluded.ratchet_tree, created_ms = excluded.created_ms
        RETURNING id INTO wid;
    FOR i IN 1 .. cardinality(p_joiners) LOOP
        UPDATE delivery_seq_counters SET last_seq = last_seq + 1
            WHERE recipient = p_joiners[i] RETURNING last_seq INTO cur;
        INSERT INTO messages (recipient, seq, channel_id, payload, created_ms, welcome_id)
            VALUES (p_joiners[i], cur, p_channel, p_entries[i], p_now, wid);
        welcome_seqs := welcome_seqs || cur;
    END LOOP;
    PERFORM qpc_notify_inboxes(p_origin, p_joiners);
    RETURN commit_seqs || welcome_seqs;
END $$;

-- 002's ack, and the Welcome parts no inbox refers to any more (locked by id
-- first, as the payloads).
CREATE OR REPLACE FUNCTION qpc_ack(p_recipient BYTEA, p_upto BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    shared BIGINT[];
    welcomes BIGINT[];
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
        DELETE FROM channel_welcomes AS w WHERE w.id = ANY (welcomes)
            AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.welcome_id = w.id);
    END IF;
    RETURN n;
END $$;

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
    RETURN n;
END $$;

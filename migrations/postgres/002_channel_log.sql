-- One ciphertext, N cursors: channel messages stored once, referenced per inbox
-- (the PostgreSQL side of sqlite/003_channel_log.sql; docs/PROTOCOL.md, "Channel logs").
-- Never edit this file once landed: add a new numbered migration instead.
--
-- Lock order (as in 001): the channel row, then channel payload rows (by id),
-- then inbox counters (by recipient). Every function below keeps it, so the
-- channel functions cannot deadlock with each other or with qpc_enqueue.
-- Domain errors: QP001 StaleEpoch, QP002 QueueFull, QP004 PermissionDenied.

-- A channel message (MLS application message, commit or Welcome) stored once.
-- It lives while an inbox entry refers to it, or until retention ends.
CREATE TABLE channel_payloads (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id BYTEA NOT NULL,
    payload    BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX channel_payloads_by_age ON channel_payloads (created_ms);
ALTER TABLE channel_payloads ALTER COLUMN payload SET STORAGE EXTERNAL;

-- An inbox entry either holds its payload (payload_id NULL) or refers to a
-- channel payload (then its own payload and channel_id are empty).
ALTER TABLE messages ADD COLUMN payload_id BIGINT REFERENCES channel_payloads (id);
CREATE INDEX messages_by_payload ON messages (payload_id) WHERE payload_id IS NOT NULL;

-- The channel's post capability: SHA-256 of a secret the members derive from
-- the MLS exporter of epoch key_epoch. committer: the device whose commit made
-- the current epoch, the only one that may set its key. All NULL: a channel
-- made by qpc_enqueue_commit, without capabilities.
ALTER TABLE channels ADD COLUMN key_hash BYTEA;
ALTER TABLE channels ADD COLUMN key_epoch BIGINT;
ALTER TABLE channels ADD COLUMN committer BYTEA;

-- Whether two capability hashes are equal, in time independent of where they
-- differ: the hashes are compared through SHA-256 again (a mismatch position
-- of the outer hashes tells nothing about the stored one).
CREATE FUNCTION qpc_same_key(a BYTEA, b BYTEA) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT a IS NOT NULL AND b IS NOT NULL AND sha256(a) = sha256(b)
$$;

-- Store p_payload once and one reference per recipient inbox, in order; an
-- inbox already holding p_max_depth messages is skipped (seq 0 for it).
-- Duplicate recipients get one reference each (the first ones that fit).
-- Returns the seq per recipient; stores nothing when every inbox is full.
-- Notifies the inboxes written (ids only).
CREATE FUNCTION qpc_store_shared(
    p_channel BYTEA, p_payload BYTEA, p_recipients BYTEA[], p_now BIGINT, p_max_depth BIGINT,
    p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    pid BIGINT;
    seqs BIGINT[];
    stored BYTEA[];
BEGIN
    IF cardinality(p_recipients) IS NULL OR cardinality(p_recipients) = 0 THEN
        RETURN '{}';
    END IF;
    INSERT INTO channel_payloads (channel_id, payload, created_ms)
        VALUES (p_channel, p_payload, p_now) RETURNING id INTO pid;
    PERFORM qpc_lock_inboxes(p_recipients);
    WITH items AS (
        SELECT u AS r, o, row_number() OVER (PARTITION BY u ORDER BY o) AS j
        FROM unnest(p_recipients) WITH ORDINALITY AS x (u, o)
    ), room AS (
        SELECT r, least(count(*), greatest(0, p_max_depth - qpc_depth(r))) AS n
        FROM items GROUP BY r
    ), bumped AS (
        UPDATE delivery_seq_counters AS d SET last_seq = d.last_seq + room.n
        FROM room WHERE d.recipient = room.r AND room.n > 0
        RETURNING d.recipient, d.last_seq - room.n AS base, room.n
    ), placed AS (
        SELECT i.r, i.o, CASE WHEN i.j <= b.n THEN b.base + i.j ELSE 0 END AS seq
        FROM items AS i LEFT JOIN bumped AS b ON b.recipient = i.r
    ), ins AS (
        INSERT INTO messages (recipient, seq, channel_id, payload, created_ms, payload_id)
        SELECT r, seq, '\x'::BYTEA, '\x'::BYTEA, p_now, pid FROM placed WHERE seq > 0
    )
    SELECT array_agg(COALESCE(seq, 0) ORDER BY o),
           array_agg(r ORDER BY o) FILTER (WHERE seq > 0)
        INTO seqs, stored FROM placed;
    IF stored IS NULL THEN
        DELETE FROM channel_payloads WHERE id = pid;
    ELSE
        PERFORM qpc_notify_inboxes(p_origin, stored);
    END IF;
    RETURN seqs;
END $$;

CREATE FUNCTION qpc_post_channel(
    p_channel BYTEA, p_key_hash BYTEA, p_recipients BYTEA[], p_payload BYTEA, p_now BIGINT,
    p_max_depth BIGINT, p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    ch channels%ROWTYPE;
BEGIN
    -- FOR SHARE: posts run side by side; a commit (FOR UPDATE) waits for them
    -- and they for it, so no post lands under a key its epoch no longer has
    SELECT * INTO ch FROM channels WHERE channel_id = p_channel FOR SHARE;
    IF NOT FOUND OR ch.key_epoch IS DISTINCT FROM ch.epoch
            OR NOT qpc_same_key(ch.key_hash, p_key_hash) THEN
        RAISE EXCEPTION USING ERRCODE = 'QP004', MESSAGE = 'not the channel''s current post key';
    END IF;
    RETURN qpc_store_shared(p_channel, p_payload, p_recipients, p_now, p_max_depth, p_origin);
END $$;

-- Epoch and capability check, epoch bump (key cleared, committer recorded),
-- commit stored once for p_members and the Welcome once for p_joiners: all or
-- nothing. An unknown channel is created at p_epoch + 1 without a key check.
-- Returns the commit seqs followed by the Welcome seqs.
CREATE FUNCTION qpc_commit_channel(
    p_channel BYTEA, p_epoch BIGINT, p_key_hash BYTEA, p_committer BYTEA, p_commit BYTEA,
    p_members BYTEA[], p_welcome BYTEA, p_joiners BYTEA[], p_now BIGINT, p_max_depth BIGINT,
    p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    ch channels%ROWTYPE;
    everyone BYTEA[] := p_members;
    r BYTEA;
    k BIGINT;
    commit_seqs BIGINT[] := '{}';
    welcome_seqs BIGINT[] := '{}';
BEGIN
    INSERT INTO channels (channel_id, epoch, updated_ms, committer)
        VALUES (p_channel, p_epoch + 1, p_now, p_committer)
        ON CONFLICT (channel_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO ch FROM channels WHERE channel_id = p_channel FOR UPDATE;
        IF ch.key_hash IS NULL AND ch.committer IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'QP004',
                MESSAGE = 'channel was made without post capabilities';
        END IF;
        IF ch.epoch <> p_epoch THEN
            RAISE EXCEPTION USING ERRCODE = 'QP001', MESSAGE = 'channel is at epoch ' || ch.epoch;
        END IF;
        IF ch.key_epoch IS DISTINCT FROM ch.epoch OR NOT qpc_same_key(ch.key_hash, p_key_hash) THEN
            RAISE EXCEPTION USING ERRCODE = 'QP004',
                MESSAGE = 'not the channel''s current post key';
        END IF;
        UPDATE channels SET epoch = p_epoch + 1, updated_ms = p_now, key_hash = NULL,
            key_epoch = NULL, committer = p_committer
            WHERE channel_id = p_channel;
    END IF;
    IF length(p_welcome) > 0 THEN
        everyone := everyone || p_joiners;
    END IF;
    PERFORM qpc_lock_inboxes(everyone);
    FOR r, k IN SELECT u, count(*) FROM unnest(everyone) AS u GROUP BY u LOOP
        IF qpc_depth(r) + k > p_max_depth THEN
            RAISE EXCEPTION USING ERRCODE = 'QP002', MESSAGE = 'a recipient inbox is full';
        END IF;
    END LOOP;
    -- depths were checked above for the whole fan-out: no limit from here
    commit_seqs := qpc_store_shared(p_channel, p_commit, p_members, p_now, 4611686018427387904,
        p_origin);
    IF length(p_welcome) > 0 THEN
        welcome_seqs := qpc_store_shared(p_channel, p_welcome, p_joiners, p_now,
            4611686018427387904, p_origin);
    END IF;
    RETURN commit_seqs || welcome_seqs;
END $$;

-- Set the post capability hash of p_epoch: only by its committer, only once.
CREATE FUNCTION qpc_set_channel_key(
    p_channel BYTEA, p_epoch BIGINT, p_committer BYTEA, p_key_hash BYTEA
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    ch channels%ROWTYPE;
BEGIN
    SELECT * INTO ch FROM channels WHERE channel_id = p_channel FOR UPDATE;
    IF NOT FOUND OR ch.epoch <> p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'QP001', MESSAGE = 'not the channel''s current epoch';
    END IF;
    IF ch.key_hash IS NOT NULL OR NOT qpc_same_key(ch.committer, p_committer) THEN
        RAISE EXCEPTION USING ERRCODE = 'QP004',
            MESSAGE = 'only the committer of this epoch sets its key, once';
    END IF;
    UPDATE channels SET key_hash = p_key_hash, key_epoch = p_epoch WHERE channel_id = p_channel;
END $$;

-- qpc_enqueue_commit checks no capability: a channel that has them refuses it.
CREATE OR REPLACE FUNCTION qpc_enqueue_commit(
    p_channel BYTEA, p_epoch BIGINT, p_recipients BYTEA[], p_payloads BYTEA[], p_now BIGINT,
    p_max_depth BIGINT, p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    seqs BIGINT[] := '{}';
    ch channels%ROWTYPE;
    cur BIGINT;
    r BYTEA;
    k BIGINT;
    i INT;
BEGIN
    INSERT INTO channels (channel_id, epoch, updated_ms) VALUES (p_channel, p_epoch, p_now)
        ON CONFLICT (channel_id) DO NOTHING;
    SELECT * INTO ch FROM channels WHERE channel_id = p_channel FOR UPDATE;
    IF ch.key_hash IS NOT NULL OR ch.committer IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'QP004', MESSAGE = 'channel uses commitChannel';
    END IF;
    IF ch.epoch <> p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'QP001', MESSAGE = 'channel is at epoch ' || ch.epoch;
    END IF;
    PERFORM qpc_lock_inboxes(p_recipients);
    FOR r, k IN SELECT u, count(*) FROM unnest(p_recipients) AS u GROUP BY u LOOP
        IF qpc_depth(r) + k > p_max_depth THEN
            RAISE EXCEPTION USING ERRCODE = 'QP002', MESSAGE = 'a recipient inbox is full';
        END IF;
    END LOOP;
    UPDATE channels SET epoch = p_epoch + 1, updated_ms = p_now WHERE channel_id = p_channel;
    FOR i IN 1 .. cardinality(p_recipients) LOOP
        UPDATE delivery_seq_counters SET last_seq = last_seq + 1
            WHERE recipient = p_recipients[i] RETURNING last_seq INTO cur;
        INSERT INTO messages (recipient, seq, channel_id, payload, created_ms)
            VALUES (p_recipients[i], cur, p_channel, p_payloads[i], p_now);
        seqs := seqs || cur;
    END LOOP;
    PERFORM qpc_notify_inboxes(p_origin, p_recipients);
    RETURN seqs;
END $$;

-- Ack deletes the inbox's entries and every channel payload no inbox refers
-- to any more. The payload rows are locked first (by id), so of two acks
-- racing for one payload's last references the later one sees the earlier
-- one's deletions and drops the payload.
CREATE OR REPLACE FUNCTION qpc_ack(p_recipient BYTEA, p_upto BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    shared BIGINT[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH gone AS (
        DELETE FROM messages WHERE recipient = p_recipient AND seq <= p_upto
        RETURNING payload_id
    )
    SELECT count(*), array_agg(DISTINCT payload_id) FILTER (WHERE payload_id IS NOT NULL)
        INTO n, shared FROM gone;
    IF shared IS NOT NULL THEN
        PERFORM 1 FROM channel_payloads WHERE id = ANY (shared) ORDER BY id FOR UPDATE;
        DELETE FROM channel_payloads AS p WHERE p.id = ANY (shared)
            AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.payload_id = p.id);
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
    RETURN n;
END $$;

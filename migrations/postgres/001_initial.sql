-- quicnprotochat node, PostgreSQL schema version 1 (the SQLite schema at its
-- version 2, plus the functions that keep each write one round trip).
-- Never edit this file once landed: add a new numbered migration instead.
--
-- Concurrency rules (several node processes share this database):
-- * A write that appends to inboxes locks their delivery_seq_counters rows
--   first, in recipient byte order (a commit locks its channels row before
--   them), so two writers never wait on each other in a cycle.
-- * Holding an inbox's counter row, a writer sees every message committed to
--   that inbox before it (READ COMMITTED takes a new snapshot per statement),
--   so the depth check is exact and seqs become visible in order: a reader
--   never sees seq n+1 without n.
-- * Wake-ups and cache invalidations are NOTIFYs sent inside the writing
--   transaction, so they are delivered exactly when it commits. Payloads carry
--   ids only: '<origin> <hex id> <hex id> ...', at most 7,900 bytes each.

-- Node-wide secrets created once: the OPAQUE server setup and the key that
-- derives decoy password files for unknown users.
CREATE TABLE node_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);

-- One row per account; usernames are stored normalised (NFKC, case-folded).
CREATE TABLE accounts (
    username   TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL
);

-- The OPAQUE password file (server-side registration record) per account.
CREATE TABLE opaque_records (
    username      TEXT PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    password_file BYTEA NOT NULL
);

-- Session tokens are stored only as SHA-256(token).
CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    device_id  BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);

-- A device: Ed25519 identity key (its id), X-Wing public key, signature by
-- the identity key over the X-Wing key, and SHA-256 of its delivery access key.
CREATE TABLE devices (
    device_id       BYTEA PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hybrid_key      BYTEA NOT NULL,
    signature       BYTEA NOT NULL,
    access_key_hash BYTEA,
    created_ms      BIGINT NOT NULL
);
CREATE INDEX devices_by_user ON devices (username, created_ms);

-- One-time KeyPackages, handed out once each (oldest first).
CREATE TABLE key_packages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id BYTEA NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    package   BYTEA NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device_id, id);

-- The last-resort KeyPackage per device, never consumed.
CREATE TABLE last_resort_key_packages (
    device_id BYTEA PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    package   BYTEA NOT NULL
);

-- The last seq handed out per inbox. Kept apart from messages so a seq is
-- never reused after the inbox was acked empty.
CREATE TABLE delivery_seq_counters (
    recipient BYTEA PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

-- Inboxes: one per recipient device. No sender column on purpose.
CREATE TABLE messages (
    recipient  BYTEA NOT NULL,
    seq        BIGINT NOT NULL,
    channel_id BYTEA NOT NULL,
    payload    BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (recipient, seq)
);
CREATE INDEX messages_by_age ON messages (created_ms);
-- sealed payloads do not compress: store them without trying
ALTER TABLE messages ALTER COLUMN payload SET STORAGE EXTERNAL;

-- Channels known to the node only by id and current MLS epoch.
CREATE TABLE channels (
    channel_id BYTEA PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- NOTIFY 'qpc_inbox' with the distinct inboxes of p_recipients, in payloads
-- of at most 7,900 bytes ('<origin> <hex> <hex> ...').
CREATE FUNCTION qpc_notify_inboxes(p_origin TEXT, p_recipients BYTEA[]) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    chunk TEXT := '';
    h TEXT;
BEGIN
    FOR h IN SELECT DISTINCT encode(u, 'hex') FROM unnest(p_recipients) AS u LOOP
        IF length(chunk) + length(h) + length(p_origin) + 1 > 7900 THEN
            PERFORM pg_notify('qpc_inbox', p_origin || chunk);
            chunk := '';
        END IF;
        chunk := chunk || ' ' || h;
    END LOOP;
    IF chunk <> '' THEN
        PERFORM pg_notify('qpc_inbox', p_origin || chunk);
    END IF;
END $$;

-- Lock the seq counters of these inboxes (creating missing ones), in byte order.
CREATE FUNCTION qpc_lock_inboxes(p_recipients BYTEA[]) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_seq_counters (recipient, last_seq)
        SELECT DISTINCT u, 0 FROM unnest(p_recipients) AS u ORDER BY 1
        ON CONFLICT (recipient) DO NOTHING;
    PERFORM 1 FROM delivery_seq_counters
        WHERE recipient = ANY (p_recipients) ORDER BY recipient FOR UPDATE;
END $$;

-- Messages waiting in a locked inbox: last_seq - MIN(seq) + 1 (seqs are handed
-- out contiguously and removed oldest first, so they form one range).
CREATE FUNCTION qpc_depth(p_recipient BYTEA) RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT c.last_seq + 1 - COALESCE(
        (SELECT MIN(seq) FROM messages WHERE recipient = p_recipient), c.last_seq + 1)
    FROM delivery_seq_counters AS c WHERE c.recipient = p_recipient
$$;

-- Append each message to its inbox in order; returns the seq of each, or -1
-- where the inbox already held p_max_depth[i] messages (nothing stored for it).
-- When every inbox takes all of its messages (the usual case), two set-based
-- statements do the work; otherwise one message at a time, as written.
CREATE FUNCTION qpc_enqueue(
    p_recipients BYTEA[], p_channels BYTEA[], p_payloads BYTEA[], p_now BIGINT[],
    p_max_depth BIGINT[], p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    seqs BIGINT[] := '{}';
    stored BYTEA[] := '{}';
    fits BOOLEAN;
    cur BIGINT;
    i INT;
BEGIN
    PERFORM qpc_lock_inboxes(p_recipients);
    SELECT bool_and(qpc_depth(g.r) + g.k <= g.lim) INTO fits FROM (
        SELECT u AS r, count(*) AS k, min(m) AS lim
        FROM unnest(p_recipients, p_max_depth) AS t (u, m) GROUP BY u
    ) AS g;
    IF fits THEN
        WITH items AS (
            SELECT u AS r, c, p, t, o, row_number() OVER (PARTITION BY u ORDER BY o) AS j
            FROM unnest(p_recipients, p_channels, p_payloads, p_now)
                WITH ORDINALITY AS x (u, c, p, t, o)
        ), bumped AS (
            UPDATE delivery_seq_counters AS d SET last_seq = d.last_seq + g.k
            FROM (SELECT r, count(*) AS k FROM items GROUP BY r) AS g
            WHERE d.recipient = g.r
            RETURNING d.recipient, d.last_seq - g.k AS base
        ), ins AS (
            INSERT INTO messages (recipient, seq, channel_id, payload, created_ms)
            SELECT i.r, b.base + i.j, i.c, i.p, i.t FROM items AS i
                JOIN bumped AS b ON b.recipient = i.r
        )
        SELECT array_agg(b.base + i.j ORDER BY i.o) INTO seqs
            FROM items AS i JOIN bumped AS b ON b.recipient = i.r;
        PERFORM qpc_notify_inboxes(p_origin, p_recipients);
        RETURN seqs;
    END IF;
    FOR i IN 1 .. cardinality(p_recipients) LOOP
        IF qpc_depth(p_recipients[i]) >= p_max_depth[i] THEN
            seqs := seqs || (-1)::BIGINT;
            CONTINUE;
        END IF;
        UPDATE delivery_seq_counters SET last_seq = last_seq + 1
            WHERE recipient = p_recipients[i] RETURNING last_seq INTO cur;
        INSERT INTO messages (recipient, seq, channel_id, payload, created_ms)
            VALUES (p_recipients[i], cur, p_channels[i], p_payloads[i], p_now[i]);
        seqs := seqs || cur;
        stored := stored || p_recipients[i];
    END LOOP;
    PERFORM qpc_notify_inboxes(p_origin, stored);
    RETURN seqs;
END $$;

-- Epoch check, epoch bump and the whole fan-out, or nothing:
-- SQLSTATE QP001 (stale epoch) or QP002 (an inbox is full).
CREATE FUNCTION qpc_enqueue_commit(
    p_channel BYTEA, p_epoch BIGINT, p_recipients BYTEA[], p_payloads BYTEA[], p_now BIGINT,
    p_max_depth BIGINT, p_origin TEXT
) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    seqs BIGINT[] := '{}';
    current_epoch BIGINT;
    cur BIGINT;
    r BYTEA;
    k BIGINT;
    i INT;
BEGIN
    INSERT INTO channels (channel_id, epoch, updated_ms) VALUES (p_channel, p_epoch, p_now)
        ON CONFLICT (channel_id) DO NOTHING;
    SELECT epoch INTO current_epoch FROM channels WHERE channel_id = p_channel FOR UPDATE;
    IF current_epoch <> p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'QP001', MESSAGE = 'channel is at epoch ' || current_epoch;
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

-- Add one-time KeyPackages (and replace the last-resort one); returns the new
-- stock, or SQLSTATE QP003 when it would exceed p_max (nothing stored).
CREATE FUNCTION qpc_add_key_packages(
    p_device BYTEA, p_packages BYTEA[], p_last_resort BYTEA, p_max BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    stock BIGINT;
BEGIN
    -- serialises uploads per device (consumers take SKIP LOCKED rows instead)
    PERFORM 1 FROM devices WHERE device_id = p_device FOR NO KEY UPDATE;
    SELECT count(*) INTO stock FROM key_packages WHERE device_id = p_device;
    IF stock + cardinality(p_packages) > p_max THEN
        RAISE EXCEPTION USING ERRCODE = 'QP003',
            MESSAGE = 'KeyPackage stock would exceed ' || p_max;
    END IF;
    INSERT INTO key_packages (device_id, package)
        SELECT p_device, u FROM unnest(p_packages) WITH ORDINALITY AS t (u, o) ORDER BY o;
    IF p_last_resort IS NOT NULL THEN
        INSERT INTO last_resort_key_packages (device_id, package) VALUES (p_device, p_last_resort)
            ON CONFLICT (device_id) DO UPDATE SET package = excluded.package;
    END IF;
    RETURN stock + cardinality(p_packages);
END $$;

-- Idempotent cleanups commit without waiting for the WAL flush (like the
-- SQLite store's NORMAL commits): a lost one is only redone.
CREATE FUNCTION qpc_ack(p_recipient BYTEA, p_upto BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM messages WHERE recipient = p_recipient AND seq <= p_upto;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION qpc_purge_messages(p_before BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM messages WHERE created_ms < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

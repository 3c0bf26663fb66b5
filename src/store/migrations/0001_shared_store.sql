-- sipcfg's shared store, schema 1: what every node of a cluster reads (the deployment, the token service's
-- state) and the change log they follow. Times are unix seconds unless named *_ms; digests are SHA-256.

-- One row. `seq` numbers every change that nodes must take in (the change log); taking it with
-- `UPDATE meta ... RETURNING` holds the row lock until commit, so changes commit in `seq` order and a node
-- that read up to N never misses a later commit below N. `token_seq` is the last change to keys or
-- revocations; `inventory_version` moves with every inventory or certificate change (optimistic checks of
-- administrative edits); `trimmed` is the highest seq purged from the change log.
CREATE TABLE meta (
    id                integer PRIMARY KEY CHECK (id = 1),
    seq               bigint NOT NULL,
    token_seq         bigint NOT NULL,
    inventory_version bigint NOT NULL,
    trimmed           bigint NOT NULL
);
INSERT INTO meta (id, seq, token_seq, inventory_version, trimmed) VALUES (1, 0, 0, 0, 0);

-- What changed, for nodes to follow: a device or user by key (applied alone), anything else ('cluster',
-- 'profile', 'trust', 'inventory') by a full load, 'tokens' by a resync of keys and revocations.
CREATE TABLE change_log (
    seq   bigint NOT NULL,
    kind  text NOT NULL CHECK (kind IN ('device', 'user', 'profile', 'cluster', 'trust', 'inventory', 'tokens')),
    key   text NOT NULL DEFAULT '',
    at_ms bigint NOT NULL,
    actor text NOT NULL DEFAULT '',
    PRIMARY KEY (seq, kind, key)
);
CREATE INDEX change_log_by_at ON change_log (at_ms);

-- The inventory, as the TOML file holds it: documents checked by sipcfg before they are written.
CREATE TABLE cluster (
    id  integer PRIMARY KEY CHECK (id = 1),
    doc jsonb NOT NULL
);
CREATE TABLE profiles (
    name text PRIMARY KEY,
    doc  jsonb NOT NULL
);
CREATE TABLE users (
    id  text PRIMARY KEY,
    doc jsonb NOT NULL
);
CREATE TABLE devices (
    name    text PRIMARY KEY,
    profile text NOT NULL REFERENCES profiles (name) ON UPDATE RESTRICT ON DELETE RESTRICT,
    owner   text REFERENCES users (id) ON UPDATE RESTRICT ON DELETE RESTRICT,
    doc     jsonb NOT NULL
);
CREATE INDEX devices_by_profile ON devices (profile);
CREATE INDEX devices_by_owner ON devices (owner);

-- Phone-Edge-Trust and Tomcat-trust: one certificate per row, PEM.
CREATE TABLE trust_certs (
    purpose text NOT NULL CHECK (purpose IN ('phone-edge-trust', 'tomcat-trust')),
    sha256  text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    pem     text NOT NULL,
    added   bigint NOT NULL,
    PRIMARY KEY (purpose, sha256)
);

-- The token service: as the embedded SQLite schema, but signing keys encrypted (see [store] key_file).
CREATE TABLE activation_codes (
    id      text PRIMARY KEY,
    digest  bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    device  text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL,
    used    bigint,
    revoked boolean NOT NULL DEFAULT false
);
CREATE INDEX activation_codes_by_created ON activation_codes (created, id);
CREATE INDEX activation_codes_by_expires ON activation_codes (expires);

CREATE TABLE refresh_tokens (
    digest  bytea PRIMARY KEY CHECK (length(digest) = 32),
    family  text NOT NULL,
    subject text NOT NULL,
    issued  bigint NOT NULL,
    expires bigint NOT NULL,
    state   text NOT NULL CHECK (state IN ('active', 'rotated', 'revoked')),
    parent  bytea REFERENCES refresh_tokens (digest) ON DELETE SET NULL,
    changed bigint NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE UNIQUE INDEX refresh_tokens_one_active ON refresh_tokens (family) WHERE state = 'active';
CREATE INDEX refresh_tokens_by_subject ON refresh_tokens (subject);
CREATE INDEX refresh_tokens_by_expires ON refresh_tokens (expires);
CREATE INDEX refresh_tokens_by_parent ON refresh_tokens (parent);

CREATE TABLE revocations (
    subject    text PRIMARY KEY,
    revoked_at bigint NOT NULL,
    keep_until bigint NOT NULL
);
CREATE INDEX revocations_by_keep_until ON revocations (keep_until);

-- private_key: nonce || AES-256-GCM ciphertext || tag of the PKCS#8 PEM, associated data the kid;
-- kek_id names the key-encryption key it was sealed with.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    algorithm   text NOT NULL,
    private_key bytea NOT NULL,
    kek_id      text NOT NULL,
    created     bigint NOT NULL,
    retire_at   bigint
);

CREATE TABLE nodes (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    started bigint NOT NULL,
    seen    bigint NOT NULL,
    applied bigint NOT NULL
);

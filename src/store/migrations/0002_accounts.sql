-- sipcfg's shared store, schema 2: administrators of the management API and the console, their API tokens
-- and browser sessions (SHA-256 digests of what the client holds), and the audit trail of administrative
-- changes. None of it is held by nodes in memory: no change-log entry.
CREATE TABLE accounts (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'read-only')),
    password_hash text NOT NULL,
    created       bigint NOT NULL
);
CREATE TABLE api_tokens (
    digest  bytea PRIMARY KEY CHECK (length(digest) = 32),
    account text NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    created bigint NOT NULL
);
CREATE INDEX api_tokens_by_account ON api_tokens (account);
CREATE TABLE sessions (
    digest  bytea PRIMARY KEY CHECK (length(digest) = 32),
    account text NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    csrf    text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account);
CREATE INDEX sessions_by_expires ON sessions (expires);
CREATE TABLE audit (
    id      bigserial PRIMARY KEY,
    at      bigint NOT NULL,
    actor   text NOT NULL,
    address text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    detail  text NOT NULL
);

-- Optimistic concurrency for activity transitions: every transition bumps the
-- version, and a transition applies only to the version it read.
ALTER TABLE activities ADD COLUMN version integer NOT NULL DEFAULT 0;

-- API keys: tenant-bound, hashed (SHA-256 of the plaintext), never stored in
-- plaintext.
CREATE TABLE api_keys (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    id            uuid        NOT NULL,
    user_sub      text        NOT NULL,
    name          text        NOT NULL,
    key_prefix    text        NOT NULL,
    key_hash      text        NOT NULL,
    permissions   text[]      NOT NULL,
    expires_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_hash_key UNIQUE (tenant_id, key_hash)
);
-- A presented key carries no tenant: it is found by its hash.
CREATE INDEX api_keys_hash_idx ON api_keys (key_hash);
CREATE INDEX api_keys_user_idx ON api_keys (tenant_id, user_sub, created_at DESC);

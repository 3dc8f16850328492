-- Policy revisions: every set of a layer's policy files that started serving,
-- numbered per tenant, with who made it and how. The global layer is kept
-- under the nil UUID as its tenant. There is no foreign key to `tenants`:
-- the global layer is not a tenant, and a tenant's folder may be on disk
-- before the tenant is provisioned.

-- File contents, stored once per tenant and sha256, kept while a revision
-- names them (revisions are never deleted).
CREATE TABLE policy_contents (
    tenant_id   uuid        NOT NULL,
    sha256      text        NOT NULL,
    content     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256),
    CONSTRAINT policy_contents_sha256_is_hex CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

CREATE TABLE policy_revisions (
    tenant_id   uuid        NOT NULL,
    revision    bigint      NOT NULL CHECK (revision > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The JWT `sub`, `api-key:<id>`, or `filesystem`.
    author      text        NOT NULL,
    source      text        NOT NULL CHECK (source IN ('API', 'FILESYSTEM', 'RESTORE', 'PROMOTE')),
    message     text,
    -- The sha256 of the whole set (its path → sha256 map): equal sets have
    -- equal digests, so a set that is already the latest revision makes no
    -- new one.
    set_sha256  text        NOT NULL,
    PRIMARY KEY (tenant_id, revision)
);
CREATE INDEX policy_revisions_set_idx ON policy_revisions (tenant_id, set_sha256, revision DESC);

-- Per revision: every file of its set (`in_set`), and what changed against
-- the previous revision (`change`; a deleted file is listed with the sha256
-- it had and is not in the set).
CREATE TABLE policy_revision_files (
    tenant_id  uuid    NOT NULL,
    revision   bigint  NOT NULL,
    path       text    NOT NULL,
    sha256     text    NOT NULL,
    in_set     boolean NOT NULL,
    change     text    CHECK (change IN ('ADDED', 'MODIFIED', 'DELETED')),
    PRIMARY KEY (tenant_id, revision, path),
    FOREIGN KEY (tenant_id, revision) REFERENCES policy_revisions (tenant_id, revision) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, sha256) REFERENCES policy_contents (tenant_id, sha256),
    CONSTRAINT policy_revision_files_deleted_not_in_set CHECK (in_set = (change IS DISTINCT FROM 'DELETED'))
);
CREATE INDEX policy_revision_files_content_idx ON policy_revision_files (tenant_id, sha256);

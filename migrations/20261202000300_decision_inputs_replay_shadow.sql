-- Knowing a change before it serves: the exact input each decision was made
-- on, replay jobs over those inputs, and shadow sets evaluated on live
-- traffic.

-- The policy input of every decision (a create, a retry, a resolution at
-- dispatch), as the policies saw it, without `config`: LZ4-compressed JSON
-- (`codec` 1). Kept for RETEN_DECISION_INPUT_RETENTION_DAYS, pruned in the
-- background by `recorded_at` (a BRIN index: rows arrive in time order, so it
-- costs the insert almost nothing).
CREATE TABLE decision_inputs (
    tenant_id    uuid        NOT NULL,
    activity_id  uuid        NOT NULL,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    stage        text        NOT NULL CHECK (stage IN ('CREATE', 'RETRY', 'DISPATCH')),
    recorded_at  timestamptz NOT NULL,
    codec        smallint    NOT NULL DEFAULT 1 CHECK (codec = 1),
    input        bytea       NOT NULL,
    PRIMARY KEY (tenant_id, activity_id, seq)
);
CREATE INDEX decision_inputs_recorded_idx ON decision_inputs USING brin (recorded_at);

-- Replay jobs. Job state lives here so that any replica answers for it; the
-- replica running one bumps `heartbeat_at`, and a RUNNING job whose
-- heartbeat stopped reads as FAILED.
CREATE TABLE policy_replays (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('RUNNING', 'DONE', 'FAILED', 'CANCELED')),
    author        text        NOT NULL,
    message       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    since         timestamptz,
    until         timestamptz,
    row_limit     integer     NOT NULL,
    -- What the candidate changes against the live set: [{path, sha256, change}].
    files         jsonb       NOT NULL,
    total         bigint      NOT NULL DEFAULT 0,
    evaluated     bigint      NOT NULL DEFAULT 0,
    changed       bigint      NOT NULL DEFAULT 0,
    unchanged     bigint      NOT NULL DEFAULT 0,
    errors        bigint      NOT NULL DEFAULT 0,
    changes       jsonb       NOT NULL DEFAULT '{"status": 0, "target": 0, "attributes": {}}',
    samples       jsonb       NOT NULL DEFAULT '[]',
    error         text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX policy_replays_list_idx ON policy_replays (tenant_id, created_at DESC);

-- The shadow set of a tenant (at most one), and its counts summed over every
-- replica that evaluates it. `set_sha256` is the digest of the shadow
-- folder's set: a replica that finds another set on disk (a GitOps commit)
-- starts a new shadow with fresh counts.
CREATE TABLE policy_shadows (
    tenant_id    uuid        PRIMARY KEY,
    id           uuid        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    author       text        NOT NULL,
    message      text,
    set_sha256   text        NOT NULL,
    evaluated    bigint      NOT NULL DEFAULT 0,
    agreed       bigint      NOT NULL DEFAULT 0,
    disagreed    bigint      NOT NULL DEFAULT 0,
    errors       bigint      NOT NULL DEFAULT 0,
    dropped      bigint      NOT NULL DEFAULT 0
);

-- The decisions a shadow set disagreed with (or failed on), both sides kept:
-- the first 1,000 per shadow; the counts go on past that.
CREATE TABLE shadow_disagreements (
    tenant_id    uuid        NOT NULL,
    shadow_id    uuid        NOT NULL,
    activity_id  uuid        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    error        text,
    live         jsonb       NOT NULL,
    shadow       jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, shadow_id, activity_id)
);

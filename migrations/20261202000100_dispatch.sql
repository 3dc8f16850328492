-- Dispatch: each tenant's provider configs, the dispatcher's claim on due
-- activities, every attempt it makes, and the results providers report back.

-- One provider config per tenant and channel (at most one active). The
-- providers themselves are a catalogue in the code (WEBHOOK, MOCK), so no
-- table holds rows without a tenant.
CREATE TABLE dispatch_configs (
    tenant_id           uuid        NOT NULL REFERENCES tenants (id),
    id                  uuid        NOT NULL,
    provider_code       text        NOT NULL CHECK (provider_code IN ('WEBHOOK', 'MOCK')),
    channel             text        NOT NULL CHECK (channel IN ('SALESMAN', 'CALLCENTER', 'WHATSAPP', 'EMAIL', 'SMS', 'PUSH')),
    base_url            text,
    -- The credentials as AES-256-GCM ciphertext (nonce, ciphertext and tag),
    -- sealed with (tenant_id, id) as associated data so that a blob copied
    -- to another row does not open. Never stored in plaintext.
    credentials_sealed  bytea,
    -- The fingerprint of the RETEN_SECRETS_KEY that sealed them (not the key).
    credentials_key_id  text,
    -- Which credentials are set, so that reads need no decryption.
    has_api_key         boolean     NOT NULL DEFAULT false,
    has_signing_secret  boolean     NOT NULL DEFAULT false,
    settings            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    is_active           boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT dispatch_configs_settings_is_object CHECK (jsonb_typeof(settings) = 'object')
);
CREATE UNIQUE INDEX dispatch_configs_active_channel_key ON dispatch_configs (tenant_id, channel) WHERE is_active;

-- The dispatcher's state on the activity itself.
ALTER TABLE activities
    -- The provider's id for the activity, from a 2xx answer.
    ADD COLUMN provider_activity_id  text,
    ADD COLUMN dispatch_attempts     integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due (a retry's backoff); NULL: at scheduled_at.
    -- 'infinity' parks an activity that waits for a manual assignment.
    ADD COLUMN next_dispatch_at      timestamptz,
    -- A claim: the dispatcher that holds the activity, until when. A claim
    -- past its time (its holder died) is taken by the next round.
    ADD COLUMN dispatch_lease_owner  uuid,
    ADD COLUMN dispatch_lease_until  timestamptz,
    ADD COLUMN dispatched_at         timestamptz;
-- The claim reads, per tenant and channel, the READY activities oldest due
-- first; the index holds only READY rows.
CREATE INDEX activities_dispatch_due_idx
    ON activities (tenant_id, channel, (COALESCE(next_dispatch_at, scheduled_at)))
    WHERE status = 'READY';
CREATE INDEX activities_provider_activity_idx
    ON activities (tenant_id, provider_activity_id)
    WHERE provider_activity_id IS NOT NULL;

-- Every send, whatever its outcome.
CREATE TABLE dispatch_attempts (
    tenant_id             uuid        NOT NULL,
    id                    uuid        NOT NULL,
    activity_id           uuid        NOT NULL,
    attempt               integer     NOT NULL,
    config_id             uuid,
    provider_code         text        NOT NULL,
    channel               text        NOT NULL,
    trigger               text        NOT NULL CHECK (trigger IN ('SCHEDULED', 'MANUAL')),
    outcome               text        NOT NULL CHECK (outcome IN ('SUCCESS', 'FAILED')),
    http_status           integer,
    error_code            text,
    error_message         text,
    provider_activity_id  text,
    started_at            timestamptz NOT NULL,
    duration_ms           integer     NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, activity_id) REFERENCES activities (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX dispatch_attempts_activity_idx ON dispatch_attempts (tenant_id, activity_id, started_at);
CREATE INDEX dispatch_attempts_started_idx ON dispatch_attempts (tenant_id, started_at);

-- Results reported for activities (or standalone, when nothing matched).
CREATE TABLE activity_results (
    tenant_id               uuid        NOT NULL REFERENCES tenants (id),
    id                      uuid        NOT NULL,
    activity_id             uuid,
    source                  text        NOT NULL CHECK (source IN ('RETEN_ACTIVITY', 'STANDALONE')),
    provider_activity_id    text,
    commerce_id             uuid,
    commerce_external_id    text        NOT NULL,
    occurred_at             timestamptz NOT NULL,
    status                  text        NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'NOT_EXECUTED', 'CANCELED', 'TRANSFERRED')),
    external_status         text,
    result_code             text        NOT NULL,
    comment                 text,
    contact_type            text        CHECK (contact_type IN ('INBOUND', 'OUTBOUND')),
    operator_external_id    text,
    future_scheduled_at     timestamptz,
    payload                 jsonb,
    raw_payload             jsonb,
    hard_override           boolean     NOT NULL DEFAULT false,
    -- The activity's status before and after this result, when it had one.
    activity_status_before  text,
    activity_status_after   text,
    -- Set when a later result with hard_override replaced this one.
    replaced_at             timestamptz,
    submitted_by            text        NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, activity_id) REFERENCES activities (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, commerce_id) REFERENCES commerces (tenant_id, id)
);
CREATE INDEX activity_results_activity_idx ON activity_results (tenant_id, activity_id, created_at);

-- The Reten schema. Every primary and unique key leads with tenant_id, so the
-- schema can be distributed by tenant (Citus) without change. `tenants` is the
-- one exception: it is the tenant itself (a reference table under Citus).

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    slug        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE commerces (
    tenant_id           uuid        NOT NULL REFERENCES tenants (id),
    id                  uuid        NOT NULL,
    external_id         text        NOT NULL,
    name                text        NOT NULL,
    tax_id              text,
    global_external_id  text,
    is_active           boolean     NOT NULL DEFAULT true,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT commerces_external_id_key UNIQUE (tenant_id, external_id),
    CONSTRAINT commerces_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
);
CREATE UNIQUE INDEX commerces_tax_id_key ON commerces (tenant_id, tax_id) WHERE tax_id IS NOT NULL;
CREATE INDEX commerces_list_idx ON commerces (tenant_id, created_at DESC, id DESC);

CREATE TABLE commerce_addresses (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    commerce_id        uuid        NOT NULL,
    address_alias      text,
    is_primary         boolean     NOT NULL DEFAULT false,
    is_active          boolean     NOT NULL DEFAULT true,
    country_code       text,
    region             text,
    commune            text,
    city               text,
    street             text,
    street_number      text,
    unit               text,
    formatted_address  text,
    latitude           double precision,
    longitude          double precision,
    source_ref         text,
    position           integer     NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, commerce_id) REFERENCES commerces (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX commerce_addresses_commerce_idx ON commerce_addresses (tenant_id, commerce_id);

CREATE TABLE commerce_users (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    commerce_id  uuid        NOT NULL,
    external_id  text        NOT NULL,
    name         text,
    roles        text[]      NOT NULL DEFAULT '{}',
    is_active    boolean     NOT NULL DEFAULT true,
    position     integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT commerce_users_external_id_key UNIQUE (tenant_id, commerce_id, external_id),
    FOREIGN KEY (tenant_id, commerce_id) REFERENCES commerces (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT commerce_users_roles_known CHECK (
        roles <@ ARRAY['OWNER', 'ORDERS', 'FINANCE', 'ATTENTION', 'ADMIN', 'COMMERCE_REP', 'OTHER']::text[]
    )
);

CREATE TABLE commerce_user_contacts (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL,
    commerce_user_id  uuid        NOT NULL,
    contact_type      text        NOT NULL CHECK (contact_type IN ('PHONE', 'EMAIL', 'WHATSAPP', 'OTHER')),
    value             text        NOT NULL,
    is_primary        boolean     NOT NULL DEFAULT false,
    is_active         boolean     NOT NULL DEFAULT true,
    position          integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, commerce_user_id) REFERENCES commerce_users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX commerce_user_contacts_user_idx ON commerce_user_contacts (tenant_id, commerce_user_id);

CREATE TABLE activities (
    tenant_id                 uuid        NOT NULL REFERENCES tenants (id),
    id                        uuid        NOT NULL,
    idempotency_key           text        NOT NULL,
    type                      text        NOT NULL CHECK (type IN ('TASK', 'MESSAGE')),
    channel                   text        NOT NULL CHECK (channel IN ('SALESMAN', 'CALLCENTER', 'WHATSAPP', 'EMAIL', 'SMS', 'PUSH')),
    status                    text        NOT NULL CHECK (status IN ('READY', 'UNRESOLVED', 'DISPATCHED', 'COMPLETED', 'CANCELED', 'FAILED')),
    reason                    text        NOT NULL,
    commerce_id               uuid        NOT NULL,
    scheduled_at              timestamptz NOT NULL,
    suggested_execution_time  timestamptz,
    user_status               text,
    score                     integer,
    assignment_reason         text,
    -- The request's resolution inputs, kept so that a retry replays them faithfully.
    target_criteria           jsonb,
    attribute_keys            text[]      NOT NULL DEFAULT '{}',
    caller_attributes         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- What the policies did: every config, criterion and attribute considered.
    resolution_trace          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_by                text        NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT activities_idempotency_key_key UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, commerce_id) REFERENCES commerces (tenant_id, id)
);
CREATE INDEX activities_list_idx ON activities (tenant_id, created_at DESC, id DESC);
CREATE INDEX activities_commerce_idx ON activities (tenant_id, commerce_id);
CREATE INDEX activities_status_idx ON activities (tenant_id, status);
CREATE INDEX activities_scheduled_idx ON activities (tenant_id, scheduled_at);

CREATE TABLE activity_target_users (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    activity_id          uuid        NOT NULL,
    commerce_user_id     uuid,
    resolution_status    text        NOT NULL CHECK (resolution_status IN ('PENDING', 'RESOLVED', 'LOCKED', 'FAILED')),
    resolution_strategy  text        NOT NULL CHECK (resolution_strategy IN ('ON_CREATION', 'ON_DISPATCH', 'MANUAL')),
    lock_reason          text        CHECK (lock_reason IN ('CRITERIA_MATCH', 'FALLBACK_COMMERCE_REP', 'FALLBACK_OWNER', 'MANUAL_ASSIGNMENT')),
    -- Which rule decided: the criterion type and the policy name, engine and sha256.
    criterion_type       text,
    policy_name          text,
    policy_engine        text,
    policy_version       text,
    resolved_at          timestamptz,
    locked_at            timestamptz,
    error_message        text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, activity_id) REFERENCES activities (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, commerce_user_id) REFERENCES commerce_users (tenant_id, id)
);
CREATE INDEX activity_target_users_activity_idx ON activity_target_users (tenant_id, activity_id);

CREATE TABLE activity_attributes (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    activity_id        uuid        NOT NULL,
    key                text        NOT NULL,
    attribute_key_id   uuid        NOT NULL,
    value              jsonb,
    resolution_status  text        NOT NULL CHECK (resolution_status IN ('PENDING', 'RESOLVED', 'FAILED', 'FALLBACK')),
    resolver_type      text,
    policy_name        text,
    policy_engine      text,
    policy_version     text,
    position           integer     NOT NULL DEFAULT 0,
    resolved_at        timestamptz,
    error_message      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT activity_attributes_key_key UNIQUE (tenant_id, activity_id, key),
    FOREIGN KEY (tenant_id, activity_id) REFERENCES activities (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE activity_status_events (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    activity_id    uuid        NOT NULL,
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    event_type     text        NOT NULL,
    from_status    text,
    to_status      text        NOT NULL,
    error_code     text,
    error_message  text,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, activity_id) REFERENCES activities (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX activity_status_events_activity_idx ON activity_status_events (tenant_id, activity_id, seq);

-- The last activity that targeted each commerce user, per channel. Kept by the
-- create transaction so that LAST_CONTACTED_* criteria read one small row per
-- user and channel instead of scanning the activity history.
CREATE TABLE commerce_user_last_targets (
    tenant_id         uuid        NOT NULL,
    commerce_user_id  uuid        NOT NULL,
    channel           text        NOT NULL,
    commerce_id       uuid        NOT NULL,
    activity_id       uuid        NOT NULL,
    last_targeted_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, commerce_user_id, channel),
    FOREIGN KEY (tenant_id, commerce_user_id) REFERENCES commerce_users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX commerce_user_last_targets_commerce_idx ON commerce_user_last_targets (tenant_id, commerce_id);

-- ferroserve's metadata store, PostgreSQL dialect. The sqlite/ and mysql/ directories
-- hold the same schema in their dialects; keep the three in step.
-- Times are milliseconds since the Unix epoch; JSON documents are TEXT.

-- The audit trail: uploads, version state changes, management calls.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    model VARCHAR(255) NOT NULL,
    version BIGINT,
    kind VARCHAR(32) NOT NULL,
    detail TEXT NOT NULL,
    client VARCHAR(255),
    actor VARCHAR(255),
    replica VARCHAR(255) NOT NULL
);
CREATE INDEX events_by_model ON events (model, id);

-- What management decided per model, restored at start: stopped, deployment settings.
CREATE TABLE model_settings (
    model VARCHAR(255) PRIMARY KEY,
    stopped BIGINT NOT NULL,
    deployment TEXT,
    updated_ms BIGINT NOT NULL
);

-- Training and batch-scoring jobs (the jobs issue): claimed by one replica at a time.
CREATE TABLE jobs (
    id VARCHAR(64) PRIMARY KEY,
    kind VARCHAR(16) NOT NULL,
    state VARCHAR(16) NOT NULL,
    spec TEXT NOT NULL,
    progress TEXT NOT NULL,
    messages TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    claimed_by VARCHAR(255),
    heartbeat_ms BIGINT,
    cancel_requested BIGINT NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state, created_ms);

-- Isolated deployments' worker registry (the deployments issue).
CREATE TABLE workers (
    model VARCHAR(255) PRIMARY KEY,
    host VARCHAR(255) NOT NULL,
    port BIGINT NOT NULL,
    pid BIGINT,
    state VARCHAR(16) NOT NULL,
    resources TEXT NOT NULL,
    replica VARCHAR(255) NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- The prediction log: sampled requests with their answers.
CREATE TABLE predictions (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    model VARCHAR(255) NOT NULL,
    version BIGINT NOT NULL,
    protocol VARCHAR(16) NOT NULL,
    latency_us BIGINT NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX predictions_by_model ON predictions (model, at_ms);

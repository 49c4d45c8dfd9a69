-- The same statements run on SQLite and PostgreSQL: portable types only, ids assigned by the
-- application inside the transaction that inserts them.
CREATE TABLE IF NOT EXISTS workloads (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    generation BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    id BIGINT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    cost_per_hour DOUBLE PRECISION NOT NULL,
    placed BIGINT NOT NULL,
    unplaced BIGINT NOT NULL,
    plan TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    unit TEXT NOT NULL,
    pool TEXT NOT NULL,
    token TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- The controller's durable memory. `owned` holds every instance it owns, one row per client
-- token, and a launch's row is written before the driver sees it, so a restart retries it
-- with the same token instead of launching again. `control_state` holds named counters:
-- `token_seq` is the highest token sequence number ever reserved (numbers are reserved in
-- blocks, so a restart never issues one twice). No semicolons in comments: the migration
-- runner splits statements on them.
CREATE TABLE IF NOT EXISTS owned (
    token TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS control_state (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

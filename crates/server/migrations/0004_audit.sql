-- Every write through the API: who (the token's name and role, or `-` when no valid token
-- was given), what (method, path, status and a one-line detail) and when.
CREATE TABLE IF NOT EXISTS audit (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    detail TEXT NOT NULL
);

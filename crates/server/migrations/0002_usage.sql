-- What every instance was billed for (the ledger's input), one row per client token, kept up
-- to date by the reconcile loop so a restart keeps the bill.
CREATE TABLE IF NOT EXISTS usage (
    token TEXT PRIMARY KEY,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    record TEXT NOT NULL
);

-- Layer 3: one row per user with its tier, an optional per-user override and the usage of one UTC
-- day. The day is part of the row: a spend on a new day starts from zero (no reset job needed), and
-- a refund only ever touches the day it was spent on.
CREATE TABLE IF NOT EXISTS user_profiles (
    user_id              TEXT PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 256),
    tier                 TEXT NOT NULL DEFAULT 'free',
    -- NULL: the tier's limit applies.
    daily_limit_override INTEGER CHECK (daily_limit_override >= 0),
    queries_used         INTEGER NOT NULL DEFAULT 0 CHECK (queries_used >= 0),
    usage_day            DATE NOT NULL DEFAULT ((now() AT TIME ZONE 'UTC')::date),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS user_profiles_updated_at ON user_profiles (updated_at);

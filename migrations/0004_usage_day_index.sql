-- no-transaction
-- check_system_load() counts today's active users (`usage_day = today AND queries_used > 0`). Without
-- an index that is a scan of every profile ever created, on every health report. A partial index
-- holds only profiles with usage (cleanup_old_sessions() zeroes past days' counters, so it stays
-- about as large as the recently active users) and answers the count by an index-only scan.
-- CONCURRENTLY (hence outside a transaction): building it on a large table does not block spends.
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_profiles_active_day
    ON user_profiles (usage_day) WHERE queries_used > 0;

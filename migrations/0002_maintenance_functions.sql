-- The original app's maintenance functions (see shared/origin), callable by the admin API and by
-- hand: SELECT * FROM check_system_load(); cleanup_old_sessions(); emergency_cleanup_connections().

-- Connection and load figures of this database.
CREATE OR REPLACE FUNCTION check_system_load()
RETURNS TABLE (metric TEXT, value NUMERIC, status TEXT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    max_conn   NUMERIC := current_setting('max_connections')::NUMERIC;
    total_conn NUMERIC;
    active     NUMERIC;
    idle_tx    NUMERIC;
    long_q     NUMERIC;
    users_today NUMERIC;
BEGIN
    SELECT count(*) INTO total_conn FROM pg_stat_activity WHERE backend_type = 'client backend';
    SELECT count(*) INTO active FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid();
    SELECT count(*) INTO idle_tx FROM pg_stat_activity
        WHERE datname = current_database() AND state LIKE 'idle in transaction%';
    SELECT count(*) INTO long_q FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active'
          AND now() - query_start > interval '30 seconds' AND pid <> pg_backend_pid();
    SELECT count(*) INTO users_today FROM user_profiles
        WHERE usage_day = (now() AT TIME ZONE 'UTC')::date AND queries_used > 0;

    metric := 'connection_usage_percent';
    value := round(100 * total_conn / greatest(max_conn, 1), 1);
    status := CASE WHEN value >= 90 THEN 'critical' WHEN value >= 70 THEN 'warning' ELSE 'ok' END;
    RETURN NEXT;
    metric := 'active_queries'; value := active; status := 'ok'; RETURN NEXT;
    metric := 'idle_in_transaction'; value := idle_tx;
    status := CASE WHEN idle_tx >= 5 THEN 'warning' ELSE 'ok' END; RETURN NEXT;
    metric := 'long_running_queries'; value := long_q;
    status := CASE WHEN long_q > 0 THEN 'warning' ELSE 'ok' END; RETURN NEXT;
    metric := 'active_users_today'; value := users_today; status := 'ok'; RETURN NEXT;
END;
$$;

-- Removes stale state: usage counters of past days are zeroed (they would reset on the next spend
-- anyway; this keeps reports honest), and, when the conversations table of the chat pipeline
-- exists, conversations not updated for `max_age` are deleted.
CREATE OR REPLACE FUNCTION cleanup_old_sessions(max_age INTERVAL DEFAULT interval '30 days')
RETURNS TABLE (what TEXT, rows_affected BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    UPDATE user_profiles SET queries_used = 0
        WHERE usage_day < (now() AT TIME ZONE 'UTC')::date AND queries_used > 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    what := 'stale_usage_counters_reset'; rows_affected := n; RETURN NEXT;

    IF to_regclass('conversations') IS NOT NULL THEN
        EXECUTE 'DELETE FROM conversations WHERE updated_at < now() - $1' USING max_age;
        GET DIAGNOSTICS n = ROW_COUNT;
        what := 'old_conversations_deleted'; rows_affected := n; RETURN NEXT;
    END IF;
END;
$$;

-- Terminates connections of THIS database that sit idle inside a transaction for longer than
-- `idle_for` (they hold locks and pool slots). Never touches another database's sessions, active
-- queries, or the calling session.
CREATE OR REPLACE FUNCTION emergency_cleanup_connections(idle_for INTERVAL DEFAULT interval '5 minutes')
RETURNS TABLE (pid INTEGER, idle_seconds NUMERIC, terminated BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN
        SELECT a.pid AS p, extract(epoch FROM now() - a.state_change) AS idle
        FROM pg_stat_activity a
        WHERE a.datname = current_database()
          AND a.pid <> pg_backend_pid()
          AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
          AND a.state_change <= now() - idle_for
    LOOP
        pid := r.p;
        idle_seconds := round(r.idle::NUMERIC, 1);
        terminated := pg_terminate_backend(r.p);
        RETURN NEXT;
    END LOOP;
END;
$$;

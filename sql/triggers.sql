-- DB triggers: a row of sync.db_trigger is the source of truth for the PostgreSQL
-- triggers that capture its events; writing it (or switching its task or project on
-- or off) installs, changes or removes them in the same transaction.
--
-- Real triggers on the watched table for db trigger <id> (all named pg_sync_dbt_<id>_*):
--   _bs    BEFORE <events> FOR EACH STATEMENT   opens the statement's capture frame
--   _ins   AFTER INSERT FOR EACH ROW WHEN (apply_on)
--   _upd   AFTER UPDATE [OF watched] FOR EACH ROW WHEN (changed AND apply_on AND before_update)
--   _del   AFTER DELETE FOR EACH ROW WHEN (apply_on over OLD)
--   _as    AFTER <events> FOR EACH STATEMENT    turns the frame into sync.job rows
-- A timed trigger keeps sync.db_trigger_due (its schedule) up to date instead:
--   _set (insert), _mov (date changed, row matches), _uns (date changed, row does not
--   match any more), _del (delete), _trunc (TRUNCATE), with the same _bs / _as pair;
--   sync.enqueue_timed_triggers() turns due entries into jobs.
-- The capture functions are Rust (pg_sync/src/triggers/capture.rs), which also
-- documents the job args format.

------------------------------------------------------------------------------------
-- Timed triggers: the schedule
------------------------------------------------------------------------------------
CREATE TABLE sync.db_trigger_due (
    trigger_id bigint NOT NULL REFERENCES sync.db_trigger ON DELETE CASCADE,
    key        jsonb NOT NULL,
    due_at     timestamptz NOT NULL,
    user_name  name NOT NULL,
    lang       text,
    PRIMARY KEY (trigger_id, key)
);
CREATE INDEX db_trigger_due_at ON sync.db_trigger_due (due_at);
COMMENT ON TABLE sync.db_trigger_due IS 'Schedule of timed db triggers: one entry per row waiting for date_column + time_offset; maintained by the installed triggers, consumed by sync.enqueue_timed_triggers().';
COMMENT ON COLUMN sync.db_trigger_due.trigger_id IS 'The timed db trigger (deleted with it).';
COMMENT ON COLUMN sync.db_trigger_due.key IS 'Primary key of the row, in the job args format (JSON scalar, or array for a composite key).';
COMMENT ON COLUMN sync.db_trigger_due.due_at IS 'When the row is due: its date_column + time_offset.';
COMMENT ON COLUMN sync.db_trigger_due.user_name IS 'Role that last set the row''s date; recorded as the user of the job.';
COMMENT ON COLUMN sync.db_trigger_due.lang IS 'Language of the session that last set the row''s date (sync.job_lang), the job''s language; NULL (scheduled before pg_sync 0.2): the project''s.';
SELECT pg_catalog.pg_extension_config_dump('sync.db_trigger_due', '');

-- A job of 1,000 keys carries ~10 kB of args: TOASTed. lz4 compresses it several
-- times faster than the default pglz, which showed up as a tenth of the cost of a
-- 1,000-row UPDATE (bench/triggers). Kept as is where PostgreSQL lacks lz4.
DO $$
BEGIN
    ALTER TABLE sync.job ALTER COLUMN args SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;

------------------------------------------------------------------------------------
-- Capture functions (Rust)
------------------------------------------------------------------------------------
CREATE FUNCTION sync.dbt_statement_start() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_dbt_statement_start';
COMMENT ON FUNCTION sync.dbt_statement_start() IS 'pg_sync db triggers: BEFORE STATEMENT, opens the statement''s capture frame.';

CREATE FUNCTION sync.dbt_capture() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_dbt_capture';
COMMENT ON FUNCTION sync.dbt_capture() IS 'pg_sync db triggers: AFTER ROW, appends the row''s primary key to the statement''s frame.';

-- SECURITY DEFINER: writers of a watched table need no right on sync.job.
CREATE FUNCTION sync.dbt_statement_end() RETURNS trigger
LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pg_sync_dbt_statement_end';
COMMENT ON FUNCTION sync.dbt_statement_end() IS 'pg_sync db triggers: AFTER STATEMENT, enqueues one job per chunk of captured keys.';

-- Raises unless the text is exactly one SQL expression (it is spliced into DDL).
CREATE FUNCTION sync.dbt_check_expression(expr text, what text, trigger_name text) RETURNS void
LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'pg_sync_dbt_check_expression';

CREATE FUNCTION sync.dbt_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM sync.db_trigger_due WHERE trigger_id = TG_ARGV[0]::bigint;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sync.dbt_truncated() IS 'pg_sync timed db triggers: TRUNCATE empties the trigger''s schedule.';

------------------------------------------------------------------------------------
-- Installing
------------------------------------------------------------------------------------

-- Drop the real triggers of db trigger dbt_id, on whatever table they are.
CREATE FUNCTION sync.dbt_remove(dbt_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.tgname, t.tgrelid FROM pg_trigger t
             WHERE t.tgname LIKE 'pg\_sync\_dbt\_' || dbt_id || '\_%' AND NOT t.tgisinternal
             ORDER BY t.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tgrelid::regclass);
    END LOOP;
END
$$;

-- Create and drop a throwaway row trigger with `expr` as its WHEN clause: PostgreSQL
-- itself checks columns, types and the NEW/OLD rules, and the error names the column.
CREATE FUNCTION sync.dbt_probe(d sync.db_trigger, tbl text, event text, expr text, what text, hint text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    probe text := 'pg_sync_dbt_' || d.id || '_probe';
    st text;
    msg text;
BEGIN
    EXECUTE format(E'CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW WHEN (\n%s\n) EXECUTE FUNCTION sync.dbt_capture(%L)',
                   probe, event, tbl, expr, d.id);
    EXECUTE format('DROP TRIGGER %I ON %s', probe, tbl);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RAISE EXCEPTION 'db trigger "%": % is invalid: %', d.name, what, msg
        USING ERRCODE = st, HINT = hint;
END
$$;

-- Validate db trigger `d` and create its real triggers. Raises a clear error (and
-- creates nothing, the caller's statement failing) when something is wrong.
CREATE FUNCTION sync.dbt_install(d sync.db_trigger) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    label text := format('db trigger "%s"', d.name);
    prefix text := 'pg_sync_dbt_' || d.id || '_';
    tbl text;
    nsp name;
    kind "char";
    col text;
    changed text;
    upd_of text := '';
    events text;
    date_att int2;
    date_type regtype;
    apply_on text;
    date_col text;
    matches text;
    st text;
    msg text;
    hint text;
BEGIN
    SELECT c.relkind, n.nspname, format('%I.%I', n.nspname, c.relname)
      INTO kind, nsp, tbl
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = d.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: its table (oid %) does not exist', label, d.table_name::oid
            USING ERRCODE = 'undefined_table',
                  HINT = 'Set table_name to an existing table, e.g. ''public.orders''::regclass.';
    END IF;
    IF kind = 'p' THEN
        RAISE EXCEPTION '%: % is a partitioned table, which db triggers do not support', label, tbl
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create one db trigger per partition.';
    END IF;
    IF kind <> 'r' THEN
        RAISE EXCEPTION '%: % is not a table', label, tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'db triggers watch ordinary tables with a primary key.';
    END IF;
    IF nsp IN ('sync', 'pg_catalog', 'information_schema') OR nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION '%: % is a pg_sync or system table and cannot be watched', label, tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Watch a table of your application.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = d.table_name AND indisprimary) THEN
        RAISE EXCEPTION '%: table % has no primary key', label, tbl
            USING ERRCODE = 'invalid_table_definition',
                  HINT = format('Add one (ALTER TABLE %s ADD PRIMARY KEY (...)); jobs identify rows by their primary key.', tbl);
    END IF;

    -- Watched columns: UPDATE OF narrows which statements fire, IS DISTINCT FROM
    -- which rows really changed.
    IF d.watched_columns IS NOT NULL THEN
        IF d.event NOT IN ('update', 'create_or_update') THEN
            RAISE EXCEPTION '%: watched_columns only applies to update and create_or_update triggers', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN d.event = 'timed'
                                  THEN 'A timed trigger reschedules a row when its date_column changes; set watched_columns to NULL.'
                                  ELSE 'Set watched_columns to NULL.' END;
        END IF;
        IF cardinality(d.watched_columns) = 0 THEN
            RAISE EXCEPTION '%: watched_columns is empty', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List the columns whose change matters, or set watched_columns to NULL to react to a change of any column.';
        END IF;
        FOREACH col IN ARRAY d.watched_columns LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = d.table_name AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
                RAISE EXCEPTION '%: watched column "%" does not exist in table %', label, col, tbl
                    USING ERRCODE = 'undefined_column',
                          HINT = 'watched_columns holds column names of the watched table, spelled exactly as in the table (case matters).';
            END IF;
            changed := concat_ws(' OR ', changed, format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', col));
        END LOOP;
        upd_of := ' OF ' || (SELECT string_agg(quote_ident(c), ', ') FROM unnest(d.watched_columns) c);
    ELSE
        changed := 'OLD.* IS DISTINCT FROM NEW.*';
    END IF;

    IF d.event = 'timed' THEN
        SELECT attnum, atttypid INTO date_att, date_type FROM pg_attribute
         WHERE attrelid = d.table_name AND attname = d.date_column AND attnum > 0 AND NOT attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION '%: date_column "%" does not exist in table %', label, d.date_column, tbl
                USING ERRCODE = 'undefined_column',
                      HINT = 'date_column names the date or timestamp column the delay counts from.';
        END IF;
        IF date_type NOT IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype) THEN
            RAISE EXCEPTION '%: date_column "%" is of type %, not date, timestamp or timestamptz', label, d.date_column, date_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use a date, timestamp or timestamptz column.';
        END IF;
        date_col := quote_ident(d.date_column);
    END IF;

    -- Expressions: first that each is one expression (they are spliced into DDL),
    -- then what PostgreSQL thinks of them, each on its own so the error names it.
    IF d.apply_on IS NOT NULL THEN
        PERFORM sync.dbt_check_expression(d.apply_on, 'apply_on', d.name);
        apply_on := E'(\n' || d.apply_on || E'\n)';
        PERFORM sync.dbt_probe(d, tbl,
            CASE d.event WHEN 'update' THEN 'UPDATE' WHEN 'delete' THEN 'DELETE' ELSE 'INSERT' END,
            d.apply_on, 'apply_on',
            CASE d.event
                WHEN 'delete' THEN 'apply_on of a delete trigger is a boolean SQL expression over the deleted row, OLD, e.g. OLD.state = ''done''.'
                WHEN 'update' THEN 'apply_on is a boolean SQL expression over the updated row, NEW, e.g. NEW.state = ''done'' (use before_update for OLD).'
                ELSE 'apply_on is a boolean SQL expression over the new row, NEW, e.g. NEW.state = ''done''.' END);
    END IF;
    IF d.before_update IS NOT NULL THEN
        PERFORM sync.dbt_check_expression(d.before_update, 'before_update', d.name);
        PERFORM sync.dbt_probe(d, tbl, 'UPDATE', d.before_update, 'before_update',
            'before_update is a boolean SQL expression over the row before the update, OLD, e.g. OLD.state <> ''done''.');
    END IF;

    events := CASE d.event
        WHEN 'create' THEN 'INSERT'
        WHEN 'update' THEN 'UPDATE' || upd_of
        WHEN 'create_or_update' THEN 'INSERT OR UPDATE' || upd_of
        WHEN 'delete' THEN 'DELETE'
        ELSE 'INSERT OR UPDATE OF ' || date_col || ' OR DELETE' END;
    BEGIN
        EXECUTE format('CREATE TRIGGER %I BEFORE %s ON %s FOR EACH STATEMENT EXECUTE FUNCTION sync.dbt_statement_start(%L)',
                       prefix || 'bs', events, tbl, d.id);
        IF d.event IN ('create', 'create_or_update') THEN
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW %s EXECUTE FUNCTION sync.dbt_capture(%L, ''e'')',
                           prefix || 'ins', tbl, 'WHEN (' || apply_on || ')', d.id);
        END IF;
        IF d.event IN ('update', 'create_or_update') THEN
            EXECUTE format(E'CREATE TRIGGER %I AFTER UPDATE%s ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION sync.dbt_capture(%L, ''e'')',
                           prefix || 'upd', upd_of, tbl,
                           concat_ws(E'\nAND ', '(' || changed || ')', apply_on, E'(\n' || d.before_update || E'\n)'),
                           d.id);
        END IF;
        IF d.event = 'delete' THEN
            EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s FOR EACH ROW %s EXECUTE FUNCTION sync.dbt_capture(%L, ''e'')',
                           prefix || 'del', tbl, 'WHEN (' || apply_on || ')', d.id);
        END IF;
        IF d.event = 'timed' THEN
            matches := concat_ws(E'\nAND ', format('NEW.%s IS NOT NULL', date_col), apply_on);
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION sync.dbt_capture(%L, ''s'', %L)',
                           prefix || 'set', tbl, matches, d.id, date_att);
            EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (NEW.%s IS DISTINCT FROM OLD.%s AND %s) EXECUTE FUNCTION sync.dbt_capture(%L, ''s'', %L)',
                           prefix || 'mov', date_col, tbl, date_col, date_col, matches, d.id, date_att);
            EXECUTE format(E'CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (NEW.%s IS DISTINCT FROM OLD.%s AND NOT coalesce(%s\n, false)) EXECUTE FUNCTION sync.dbt_capture(%L, ''u'')',
                           prefix || 'uns', date_col, tbl, date_col, date_col, matches, d.id);
            EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s FOR EACH ROW EXECUTE FUNCTION sync.dbt_capture(%L, ''u'')',
                           prefix || 'del', tbl, d.id);
            EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION sync.dbt_truncated(%L)',
                           prefix || 'trunc', tbl, d.id);
        END IF;
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH STATEMENT EXECUTE FUNCTION sync.dbt_statement_end(%L, %L, %L, %L, %L, %L)',
                       prefix || 'as', events, tbl, d.id, CASE WHEN d.event = 'timed' THEN 't' ELSE 'e' END,
                       d.project_id, d.task_id, d.name, d.chunk_size);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
        RAISE EXCEPTION '%: cannot install its triggers on %: %', label, tbl, msg
            USING ERRCODE = st, HINT = coalesce(nullif(hint, ''), 'Check the db trigger''s columns and expressions against the table.');
    END;
END
$$;

-- Bring the real triggers of db trigger dbt_id in line with its row: remove them, then
-- install them if the trigger, its task and its project are active and it is not
-- broken. With `validate`, an inactive trigger is checked too (created, then dropped).
-- Returns whether the triggers are installed.
CREATE FUNCTION sync.dbt_apply(dbt_id bigint, validate boolean) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d sync.db_trigger;
    exists_ boolean;
    live boolean;
    prev text := coalesce(current_setting('pg_sync.internal_ddl', true), '');
BEGIN
    -- Our own DROP TRIGGERs must not look like a user breaking the trigger (sql_drop).
    PERFORM set_config('pg_sync.internal_ddl', 'on', true);
    PERFORM sync.dbt_remove(dbt_id);
    SELECT * INTO d FROM sync.db_trigger WHERE id = dbt_id;
    exists_ := FOUND;
    live := exists_ AND d.active AND d.broken_reason IS NULL
            AND EXISTS (SELECT 1 FROM sync.task t JOIN sync.project p ON p.id = t.project_id
                        WHERE t.id = d.task_id AND t.active AND p.active);
    IF live OR (exists_ AND validate AND d.broken_reason IS NULL) THEN
        PERFORM sync.dbt_install(d);
        IF NOT live THEN
            PERFORM sync.dbt_remove(dbt_id);
        END IF;
    END IF;
    IF NOT live THEN
        DELETE FROM sync.db_trigger_due WHERE trigger_id = dbt_id;
    END IF;
    PERFORM set_config('pg_sync.internal_ddl', prev, true);
    RETURN live;
END
$$;

-- JSON key expression (job args format) of a row of `tbl` aliased `alias`.
CREATE FUNCTION sync.dbt_key_expr(tbl regclass, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN count(*) = 1 THEN min(e)
                ELSE 'jsonb_build_array(' || string_agg(e, ', ' ORDER BY pos) || ')' END
    FROM (SELECT array_position(i.indkey::int2[], a.attnum) AS pos,
                 CASE WHEN a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                      THEN format('to_jsonb(%I.%I)', alias, a.attname)
                      ELSE format('to_jsonb(%I.%I::text)', alias, a.attname) END AS e
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
          WHERE i.indrelid = tbl AND i.indisprimary) k
$$;

-- Replace the schedule of a timed trigger (called by sync.dbt_backfill). The jobs'
-- user is the caller (sync.caller()), never a value the caller passes.
CREATE FUNCTION sync.dbt_schedule(dbt_id bigint, keys jsonb[], dues timestamptz[])
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM sync.db_trigger_due WHERE trigger_id = dbt_id;
    INSERT INTO sync.db_trigger_due (trigger_id, key, due_at, user_name, lang)
    SELECT DISTINCT ON (u.k) dbt_id, u.k, u.d, sync.caller(),
           (SELECT sync.job_lang(t.project_id, sync.caller()) FROM sync.db_trigger t WHERE t.id = dbt_id)
    FROM unnest(keys, dues) AS u(k, d)
    WHERE u.k IS NOT NULL AND u.d IS NOT NULL
    ORDER BY u.k;
$$;

-- (Re)build the schedule of a timed trigger when it is installed: rows due after now,
-- and rows that were already scheduled (their due time recomputed, so a row waiting
-- while the worker was down is not lost). Rows already past their time when the
-- trigger is created are not handled. SECURITY INVOKER: apply_on is user SQL and runs
-- as the role that wrote the db trigger (or switched it on), like a trigger's WHEN.
CREATE FUNCTION sync.dbt_backfill(dbt_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d sync.db_trigger;
    keys jsonb[];
    dues timestamptz[];
BEGIN
    SELECT * INTO d FROM sync.db_trigger WHERE id = dbt_id;
    IF NOT FOUND OR d.event <> 'timed' THEN
        RETURN;
    END IF;
    EXECUTE format(E'SELECT array_agg(s.k), array_agg(s.due) FROM (\n'
                   || E'SELECT %s AS k, new.%I::timestamptz + $1 AS due FROM %s AS new\n'
                   || E'WHERE new.%I IS NOT NULL AND (\n%s\n)) s\n'
                   || E'WHERE s.due > sync.clock()\n'
                   || '   OR s.k IN (SELECT key FROM sync.db_trigger_due WHERE trigger_id = $2)',
                   sync.dbt_key_expr(d.table_name, 'new'), d.date_column, d.table_name,
                   d.date_column, coalesce(d.apply_on, 'true'))
        INTO keys, dues USING d.time_offset, d.id;
    PERFORM sync.dbt_schedule(d.id, coalesce(keys, '{}'), coalesce(dues, '{}'));
END
$$;

------------------------------------------------------------------------------------
-- Keeping real triggers in step with sync.db_trigger, sync.task and sync.project
------------------------------------------------------------------------------------

-- SECURITY INVOKER, so the privilege check below sees the writer of the row.
CREATE FUNCTION sync.dbt_on_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM sync.dbt_apply(OLD.id, false);
        RETURN NULL;
    END IF;
    -- apply_on and before_update run as the writers of the table, as a trigger's WHEN
    -- does: defining them, and installing them, takes the right to create triggers on
    -- it. So the writer's privilege is checked on every new or changed definition and
    -- whenever a write may install the triggers (a repaired or re-activated trigger),
    -- whatever broken_reason says.
    IF (TG_OP = 'INSERT'
        OR (NEW.table_name, NEW.event, NEW.apply_on, NEW.before_update, NEW.watched_columns, NEW.date_column)
           IS DISTINCT FROM
           (OLD.table_name, OLD.event, OLD.apply_on, OLD.before_update, OLD.watched_columns, OLD.date_column)
        OR (OLD.broken_reason IS NOT NULL AND NEW.broken_reason IS NULL)
        OR (NEW.active AND NOT OLD.active))
       AND NOT coalesce(has_table_privilege(NEW.table_name, 'TRIGGER'), true) THEN
        RAISE EXCEPTION 'db trigger "%": permission denied to watch table %', NEW.name, NEW.table_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Its expressions run as the writers of the table, so defining it takes the TRIGGER privilege: GRANT TRIGGER ON %s TO %I.',
                                NEW.table_name, current_user);
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
        PERFORM sync.dbt_apply(OLD.id, false);
    END IF;
    IF sync.dbt_apply(NEW.id, true) AND NEW.event = 'timed' THEN
        PERFORM sync.dbt_backfill(NEW.id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER install AFTER INSERT OR UPDATE OR DELETE ON sync.db_trigger
    FOR EACH ROW EXECUTE FUNCTION sync.dbt_on_write();

-- A broken trigger (its table or a real trigger was dropped) is repaired by switching
-- it on again or changing its definition: that clears broken_reason and reinstalls.
CREATE FUNCTION sync.dbt_repair() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.broken_reason IS NOT NULL AND NEW.broken_reason IS NOT DISTINCT FROM OLD.broken_reason
       AND NEW.active
       AND (NOT OLD.active
            OR (NEW.table_name, NEW.event, NEW.apply_on, NEW.before_update, NEW.watched_columns, NEW.date_column)
               IS DISTINCT FROM
               (OLD.table_name, OLD.event, OLD.apply_on, OLD.before_update, OLD.watched_columns, OLD.date_column)) THEN
        NEW.broken_reason := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER repair BEFORE UPDATE ON sync.db_trigger
    FOR EACH ROW EXECUTE FUNCTION sync.dbt_repair();

CREATE FUNCTION sync.dbt_on_owner_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, event FROM sync.db_trigger
             WHERE CASE TG_TABLE_NAME WHEN 'task' THEN task_id = NEW.id ELSE project_id = NEW.id END
             ORDER BY id
    LOOP
        IF sync.dbt_apply(r.id, false) AND r.event = 'timed' THEN
            PERFORM sync.dbt_backfill(r.id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER db_triggers_active AFTER UPDATE OF active ON sync.task
    FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION sync.dbt_on_owner_change();
CREATE TRIGGER db_triggers_active AFTER UPDATE OF active ON sync.project
    FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION sync.dbt_on_owner_change();

------------------------------------------------------------------------------------
-- Timed triggers: enqueueing
------------------------------------------------------------------------------------

-- Called by workers on a schedule. Takes every schedule entry whose time has come
-- (by sync.clock()), deletes it and enqueues one job per (trigger, user, language, chunk).
-- Concurrent callers skip each other's entries (SKIP LOCKED), so no row is enqueued
-- twice; entries wait in the table, so a caller that comes late misses nothing.
CREATE FUNCTION sync.enqueue_timed_triggers() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    WITH due AS (
        DELETE FROM sync.db_trigger_due d
        USING (SELECT trigger_id, key FROM sync.db_trigger_due
               WHERE due_at <= sync.clock()
               FOR UPDATE SKIP LOCKED) s
        WHERE d.trigger_id = s.trigger_id AND d.key = s.key
        RETURNING d.trigger_id, d.key, d.due_at, d.user_name, d.lang
    ), numbered AS (
        SELECT due.trigger_id, due.key, due.user_name, due.lang,
               row_number() OVER (PARTITION BY due.trigger_id, due.user_name, due.lang ORDER BY due.due_at, due.key) - 1 AS rn
        FROM due
    ), jobs AS (
        INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler, args, user_name, lang)
        SELECT t.project_id, t.task_id, 'db', t.id, t.name, 'handle_db',
               jsonb_build_object('event', 'timed',
                                  'table', ns.nspname || '.' || c.relname,
                                  'keys', jsonb_agg(n.key ORDER BY n.rn)),
               n.user_name, coalesce(n.lang, (SELECT p.lang FROM sync.project p WHERE p.id = t.project_id))
        FROM numbered n
        JOIN sync.db_trigger t ON t.id = n.trigger_id
        JOIN pg_class c ON c.oid = t.table_name
        JOIN pg_namespace ns ON ns.oid = c.relnamespace
        GROUP BY t.id, t.project_id, t.task_id, t.name, ns.nspname, c.relname, n.user_name, n.lang, n.rn / t.chunk_size
        ORDER BY t.id, n.user_name, n.lang, n.rn / t.chunk_size
        RETURNING 1
    )
    SELECT count(*) INTO n FROM jobs;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.enqueue_timed_triggers() IS 'Enqueue handle_db jobs (event "timed") for rows whose date_column + time_offset has come (sync.clock()); returns the number of jobs. Workers call it on a schedule.';

------------------------------------------------------------------------------------
-- DDL on watched tables and on the extension
------------------------------------------------------------------------------------

-- Every trigger on a user table that calls a pg_sync function (db triggers and the
-- link cleanup triggers): they must go before DROP EXTENSION pg_sync can succeed.
CREATE FUNCTION sync.dbt_drop_all_triggers() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('pg_sync.internal_ddl', 'on', true);
    FOR r IN
        SELECT DISTINCT t.tgname, t.tgrelid
        FROM pg_trigger t
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = t.tgfoid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_sync'
        WHERE NOT t.tgisinternal
          AND NOT EXISTS (SELECT 1 FROM pg_depend m
                          WHERE m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
                            AND m.refclassid = 'pg_extension'::regclass AND m.refobjid = e.oid
                            AND m.deptype = 'e')
        ORDER BY t.tgrelid, t.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tgrelid::regclass);
    END LOOP;
END
$$;

CREATE FUNCTION sync.dbt_on_drop_extension() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pg_sync_dbt_on_drop_extension';
CREATE EVENT TRIGGER pg_sync_dbt_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION sync.dbt_on_drop_extension();

-- A dropped watched table (or a real trigger dropped by hand, or with a column by
-- DROP ... CASCADE) switches the db trigger off and says why in broken_reason.
-- SECURITY DEFINER: whoever drops a table need not be allowed to write sync.db_trigger.
CREATE FUNCTION sync.dbt_on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF current_setting('pg_sync.internal_ddl', true) = 'on' THEN
        RETURN;
    END IF;
    FOR r IN SELECT objid, object_identity FROM pg_event_trigger_dropped_objects()
             WHERE object_type = 'table'
    LOOP
        UPDATE sync.db_trigger
           SET active = false, broken_reason = format('its table %s was dropped', r.object_identity)
         WHERE table_name = r.objid AND broken_reason IS NULL;
    END LOOP;
    FOR r IN SELECT object_identity FROM pg_event_trigger_dropped_objects()
             WHERE object_type = 'trigger' AND object_identity ~ '^pg_sync_dbt_[0-9]+_'
    LOOP
        UPDATE sync.db_trigger
           SET active = false, broken_reason = format('its PostgreSQL trigger %s was dropped', r.object_identity)
         WHERE id = substring(r.object_identity FROM '^pg_sync_dbt_([0-9]+)_')::bigint
           AND broken_reason IS NULL;
    END LOOP;
END
$$;
CREATE EVENT TRIGGER pg_sync_dbt_sql_drop ON sql_drop
    EXECUTE FUNCTION sync.dbt_on_sql_drop();

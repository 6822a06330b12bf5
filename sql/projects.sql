-- Project export / import: sync_export_project(name) writes a project's definition as
-- one JSON document; sync_import_project(doc, replace) creates or updates a project from one.
--
-- The document (format version 1, "pg_sync_export": 1) holds what defines a project:
-- its row (name, active, code, eval_context, run_as, lang), params, texts, secret KEYS (never
-- values), tasks and triggers of every kind, each trigger naming its task. Arrays are
-- sorted by name (bytewise), intervals are written in the `postgres` IntervalStyle and
-- timestamps in UTC, so two exports of the same project are equal, whatever the session.
--
-- Import runs as the caller (SECURITY INVOKER): column privileges apply as for plain
-- INSERTs and UPDATEs, and so do the maintenance triggers of the sync tables (name
-- registry, project version, db trigger installer, param_fill_value). Statements that
-- touch admin-only columns (core_code, eval_context, run_as, secrets, cron run_as) run
-- only when the document changes them, so a developer may import any project whose
-- admin-only parts are empty or unchanged. With `replace`, what belongs to the
-- installation rather than to the definition is kept: param values, secret values,
-- webhook tokens and signing secrets, the schedule of cron triggers (next_run_at,
-- calls_left); rows are matched by key or name, so ids, jobs and logs of what stays stay.

------------------------------------------------------------------------------------
-- Checking a document
------------------------------------------------------------------------------------

CREATE FUNCTION sync.pio_fail(path text, problem text, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invalid project document: % %', path, problem
        USING ERRCODE = 'invalid_parameter_value',
              HINT = coalesce(hint, 'See docs/export-import.md in the pg_sync repository for the format; sync_export_project(name) shows a complete document.');
END
$$;
COMMENT ON FUNCTION sync.pio_fail(text, text, text) IS 'sync_import_project: raise 22023 about the field at path of the document.';

-- A JSON value for an error message, cut short.
CREATE FUNCTION sync.pio_show(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(v::text) > 60 THEN left(v::text, 57) || '...' ELSE v::text END
$$;

-- Check object `obj` (at `path` in the document) against `fields`: field name -> type
-- (string, boolean, integer, interval, timestamptz, strings = array of strings, array)
-- followed by "!" (required, not null), "?" (may be missing or null) or nothing (may
-- be missing, not null: the column default applies). Unknown fields are refused: they
-- would be lost silently (a typo, or a document of a newer format).
CREATE FUNCTION sync.pio_check_object(obj jsonb, path text, fields jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    f text;
    spec text;
    typ text;
    mode text;
    v jsonb;
    fpath text;
    ok boolean;
    what text;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        PERFORM sync.pio_fail(path, format('must be a JSON object, not %s', sync.pio_show(obj)));
    END IF;
    FOR f IN SELECT k FROM jsonb_object_keys(obj) k ORDER BY k COLLATE "C" LOOP
        IF NOT fields ? f THEN
            PERFORM sync.pio_fail(concat_ws('.', nullif(path, ''), f), 'is not a known field',
                format('Known fields%s: %s.', CASE WHEN path = '' THEN '' ELSE ' of ' || regexp_replace(path, '\[[0-9]+\]$', '[]') END,
                       (SELECT string_agg(k, ', ' ORDER BY k COLLATE "C") FROM jsonb_object_keys(fields) k)));
        END IF;
    END LOOP;
    FOR f, spec IN SELECT key, value FROM jsonb_each_text(fields) ORDER BY key COLLATE "C" LOOP
        typ := rtrim(spec, '!?');
        mode := substr(spec, length(typ) + 1);
        fpath := concat_ws('.', nullif(path, ''), f);
        IF NOT obj ? f THEN
            IF mode = '!' THEN
                PERFORM sync.pio_fail(fpath, 'is missing');
            END IF;
            CONTINUE;
        END IF;
        v := obj -> f;
        IF jsonb_typeof(v) = 'null' THEN
            IF mode <> '?' THEN
                PERFORM sync.pio_fail(fpath, 'must not be null');
            END IF;
            CONTINUE;
        END IF;
        ok := true;
        CASE typ
            WHEN 'string' THEN
                what := 'a string';
                ok := jsonb_typeof(v) = 'string';
            WHEN 'boolean' THEN
                what := 'true or false';
                ok := jsonb_typeof(v) = 'boolean';
            WHEN 'integer' THEN
                what := 'an integer';
                ok := jsonb_typeof(v) = 'number'
                      AND v::numeric = trunc(v::numeric)
                      AND v::numeric BETWEEN -2147483648 AND 2147483647;
            WHEN 'interval', 'timestamptz' THEN
                what := CASE typ WHEN 'interval' THEN 'an interval such as "5 minutes"'
                                 ELSE 'a timestamp with time zone such as "2024-05-01T12:00:00+00:00"' END;
                ok := jsonb_typeof(v) = 'string';
                IF ok THEN
                    BEGIN
                        IF typ = 'interval' THEN
                            PERFORM (v #>> '{}')::interval;
                        ELSE
                            PERFORM (v #>> '{}')::timestamptz;
                        END IF;
                    EXCEPTION WHEN data_exception THEN
                        ok := false;
                    END;
                END IF;
            WHEN 'strings' THEN
                what := 'an array of strings';
                ok := jsonb_typeof(v) = 'array'
                      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) <> 'string');
            WHEN 'array' THEN
                what := 'an array';
                ok := jsonb_typeof(v) = 'array';
        END CASE;
        IF NOT ok THEN
            PERFORM sync.pio_fail(fpath, format('must be %s, not %s', what, sync.pio_show(v)));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION sync.pio_check_object(jsonb, text, jsonb) IS 'sync_import_project: check the fields and types of one object of a project document.';

-- The format, section by section (sync_export_project writes every field).
CREATE FUNCTION sync.pio_format() RETURNS TABLE (section text, fields jsonb)
LANGUAGE sql IMMUTABLE AS $$
    VALUES
    ('', '{"pg_sync_export": "integer!", "name": "string!", "active": "boolean",
           "core_code": "string", "common_code": "string", "eval_context": "strings",
           "run_as": "string?", "lang": "string", "params": "array", "texts": "array", "secrets": "array",
           "tasks": "array", "cron_triggers": "array", "db_triggers": "array",
           "webhook_triggers": "array", "button_triggers": "array"}'::jsonb),
    ('params', '{"key": "string!", "value": "string?", "initial_value": "string?",
                 "description": "string?", "url": "string?"}'),
    ('texts', '{"key": "string!", "lang": "string", "value": "string"}'),
    ('secrets', '{"key": "string!"}'),
    ('tasks', '{"name": "string!", "code": "string", "active": "boolean", "time_limit": "interval?"}'),
    ('cron_triggers', '{"name": "string!", "task": "string!", "active": "boolean",
                        "interval": "interval?", "schedule": "string?", "timezone": "string",
                        "next_run_at": "timestamptz", "calls_left": "integer", "run_as": "string?"}'),
    ('db_triggers', '{"name": "string!", "task": "string!", "active": "boolean",
                      "table_name": "string!", "event": "string!", "apply_on": "string?",
                      "before_update": "string?", "watched_columns": "strings?",
                      "date_column": "string?", "time_offset": "interval",
                      "chunk_size": "integer"}'),
    ('webhook_triggers', '{"name": "string!", "task": "string!", "active": "boolean",
                           "content_type": "string", "token": "string?"}'),
    ('button_triggers', '{"name": "string!", "task": "string!", "active": "boolean",
                          "description": "string?"}')
$$;
COMMENT ON FUNCTION sync.pio_format() IS 'Fields of a project document (format 1), per section: type, then ! (required) or ? (nullable).';

-- Raise 22023 naming the field unless `doc` is a well-formed document of format 1.
CREATE FUNCTION sync.pio_check_document(doc jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s record;
    r record;
BEGIN
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'invalid project document: it must be a JSON object, not %', coalesce(sync.pio_show(doc), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass what sync_export_project(name) returns (or sync_worker export NAME prints).';
    END IF;
    IF NOT doc ? 'pg_sync_export' THEN
        RAISE EXCEPTION 'invalid project document: pg_sync_export (the format version) is missing'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'This is not a pg_sync project document: they come from sync_export_project(name) or sync_worker export NAME and start with "pg_sync_export": 1.';
    END IF;
    IF doc -> 'pg_sync_export' IS DISTINCT FROM '1'::jsonb THEN
        RAISE EXCEPTION 'invalid project document: pg_sync_export is %, a format version this pg_sync does not know', sync.pio_show(doc -> 'pg_sync_export')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'This pg_sync reads format version 1; export the project with it, or upgrade pg_sync to import this document.';
    END IF;
    -- The top level first: it says the sections are arrays.
    PERFORM sync.pio_check_object(doc, '', f.fields) FROM sync.pio_format() f WHERE f.section = '';
    FOR s IN SELECT * FROM sync.pio_format() f WHERE f.section <> '' LOOP
        PERFORM sync.pio_check_object(e, format('%s[%s]', s.section, n - 1), s.fields)
        FROM jsonb_array_elements(coalesce(doc -> s.section, '[]')) WITH ORDINALITY AS a(e, n);
    END LOOP;
    IF btrim(doc ->> 'name') = '' THEN
        PERFORM sync.pio_fail('name', 'must not be empty');
    END IF;

    -- Values the tables would refuse with a less helpful message.
    SELECT format('db_triggers[%s]', n - 1) AS path, e INTO r
    FROM jsonb_array_elements(coalesce(doc -> 'db_triggers', '[]')) WITH ORDINALITY AS a(e, n)
    WHERE NOT (e ->> 'event' = ANY ('{create,update,create_or_update,delete,timed}'))
       OR (e ->> 'event' = 'timed') <> (coalesce(e ->> 'date_column', '') <> '')
       OR (e ->> 'before_update' IS NOT NULL AND e ->> 'event' NOT IN ('update', 'create_or_update'))
    ORDER BY n LIMIT 1;
    IF FOUND THEN
        IF NOT (r.e ->> 'event' = ANY ('{create,update,create_or_update,delete,timed}')) THEN
            PERFORM sync.pio_fail(r.path || '.event', format('is %s, not one of create, update, create_or_update, delete, timed', sync.pio_show(r.e -> 'event')));
        ELSIF r.e ->> 'before_update' IS NOT NULL AND r.e ->> 'event' NOT IN ('update', 'create_or_update') THEN
            PERFORM sync.pio_fail(r.path || '.before_update', 'only applies to update and create_or_update triggers');
        ELSE
            PERFORM sync.pio_fail(r.path || '.date_column', 'is required for event "timed" and only allowed for it');
        END IF;
    END IF;
    SELECT format('cron_triggers[%s]', n - 1) AS path, e INTO r
    FROM jsonb_array_elements(coalesce(doc -> 'cron_triggers', '[]')) WITH ORDINALITY AS a(e, n)
    WHERE (e ->> 'interval' IS NOT NULL) = (e ->> 'schedule' IS NOT NULL)
       OR sync.cron_schedule_problem(e ->> 'schedule', coalesce(e ->> 'timezone', 'UTC')) IS NOT NULL
    ORDER BY n LIMIT 1;
    IF FOUND THEN
        IF (r.e ->> 'interval' IS NOT NULL) = (r.e ->> 'schedule' IS NOT NULL) THEN
            PERFORM sync.pio_fail(r.path, 'must have either an interval or a schedule, not both or neither',
                'Write "interval": "1 hour", or "schedule": "0 2 * * *" with "timezone": "Europe/Berlin", and set the other to null.');
        ELSE
            PERFORM sync.pio_fail(r.path, sync.cron_schedule_problem(r.e ->> 'schedule', coalesce(r.e ->> 'timezone', 'UTC')),
                'Write five fields (minute hour day-of-month month day-of-week) or six with seconds first, e.g. "0 2 * * *", and an IANA time zone such as "Europe/Berlin" or "UTC".');
        END IF;
    END IF;
    SELECT format('webhook_triggers[%s].content_type', n - 1) AS path, e -> 'content_type' AS v INTO r
    FROM jsonb_array_elements(coalesce(doc -> 'webhook_triggers', '[]')) WITH ORDINALITY AS a(e, n)
    WHERE e ->> 'content_type' NOT IN ('json', 'form')
    ORDER BY n LIMIT 1;
    IF FOUND THEN
        PERFORM sync.pio_fail(r.path, format('is %s, not "json" or "form"', sync.pio_show(r.v)));
    END IF;

    -- Keys and names appear once (trigger names once across all kinds).
    SELECT d.path, d.shown, d.first INTO r FROM (
        SELECT x.path, x.shown, x.ord,
               first_value(x.path) OVER (PARTITION BY x.grp, x.k ORDER BY x.ord) AS first
        FROM (
            SELECT 'p' AS grp, e ->> 'key' AS k, format('params[%s].key', n - 1) AS path, e -> 'key' AS shown, 100000000 + n AS ord
            FROM jsonb_array_elements(coalesce(doc -> 'params', '[]')) WITH ORDINALITY AS a(e, n)
            UNION ALL
            SELECT 't', (e ->> 'key') || '/' || coalesce(e ->> 'lang', 'en_US'), format('texts[%s]', n - 1),
                   jsonb_build_array(e -> 'key', coalesce(e -> 'lang', '"en_US"')), 200000000 + n
            FROM jsonb_array_elements(coalesce(doc -> 'texts', '[]')) WITH ORDINALITY AS a(e, n)
            UNION ALL
            SELECT 's', e ->> 'key', format('secrets[%s].key', n - 1), e -> 'key', 300000000 + n
            FROM jsonb_array_elements(coalesce(doc -> 'secrets', '[]')) WITH ORDINALITY AS a(e, n)
            UNION ALL
            SELECT 'k', e ->> 'name', format('tasks[%s].name', n - 1), e -> 'name', 400000000 + n
            FROM jsonb_array_elements(coalesce(doc -> 'tasks', '[]')) WITH ORDINALITY AS a(e, n)
            UNION ALL
            SELECT 'w', e ->> 'token', format('webhook_triggers[%s].token', n - 1), e -> 'token', 450000000 + n
            FROM jsonb_array_elements(coalesce(doc -> 'webhook_triggers', '[]')) WITH ORDINALITY AS a(e, n)
            WHERE e ->> 'token' IS NOT NULL
            UNION ALL
            SELECT 'g', e ->> 'name', format('%s[%s].name', kind, n - 1), e -> 'name', 500000000 + k * 10000000 + n
            FROM unnest(ARRAY['cron_triggers', 'db_triggers', 'webhook_triggers', 'button_triggers'])
                 WITH ORDINALITY AS kinds(kind, k),
                 jsonb_array_elements(coalesce(doc -> kind, '[]')) WITH ORDINALITY AS a(e, n)
        ) x
    ) d
    WHERE d.path <> d.first
    ORDER BY d.ord LIMIT 1;
    IF FOUND THEN
        PERFORM sync.pio_fail(r.path, format('repeats %s (%s)', r.first, sync.pio_show(r.shown)),
            'Param keys, text keys per language, secret keys and task names are unique in a project; trigger names too, across cron, db, webhook and button triggers; webhook tokens everywhere.');
    END IF;

    -- Every trigger's task is in the document.
    SELECT format('%s[%s].task', kind, n - 1) AS path, e -> 'task' AS v INTO r
    FROM unnest(ARRAY['cron_triggers', 'db_triggers', 'webhook_triggers', 'button_triggers'])
         WITH ORDINALITY AS kinds(kind, k),
         jsonb_array_elements(coalesce(doc -> kind, '[]')) WITH ORDINALITY AS a(e, n)
    WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(doc -> 'tasks', '[]')) t
                      WHERE t ->> 'name' = e ->> 'task')
    ORDER BY k, n LIMIT 1;
    IF FOUND THEN
        PERFORM sync.pio_fail(r.path, format('is %s, which is not the name of a task in tasks', sync.pio_show(r.v)),
            'A trigger names its task (tasks[].name) in the same document.');
    END IF;
END
$$;
COMMENT ON FUNCTION sync.pio_check_document(jsonb) IS 'sync_import_project: raise 22023 naming the field unless the document is a well-formed project document (format 1).';

-- Raise 42501 with a clear message unless `allowed`: the caller's privilege on the
-- admin-only columns the document changes (PostgreSQL checks the statement anyway).
CREATE FUNCTION sync.pio_require(allowed boolean, what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT allowed THEN
        RAISE EXCEPTION 'permission denied to %', what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'core_code, eval_context, run_as (of the project and of cron triggers) and secrets are admin-only: import this document as sync_admin, or leave these fields as they are in the project.';
    END IF;
END
$$;
COMMENT ON FUNCTION sync.pio_require(boolean, text) IS 'sync_import_project: raise 42501 naming what the document wanted unless the caller may do it.';

-- Whether the caller holds `priv` on every column `cols` of `tbl`.
CREATE FUNCTION sync.pio_may(tbl text, cols text[], priv text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM unnest(cols) c WHERE NOT has_column_privilege(tbl, c, priv))
$$;

------------------------------------------------------------------------------------
-- Export
------------------------------------------------------------------------------------

-- SECURITY INVOKER: the caller reads what they may read. Only columns sync_user may
-- read are touched (secret keys, not values; no signing secrets), and webhook tokens
-- only when the caller may read them.
-- The settings make the text of intervals and timestamps independent of the session.
CREATE FUNCTION sync_export_project(name text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
AS $$
#variable_conflict use_column
DECLARE
    p record;
    broken record;
    hooks jsonb;
BEGIN
    SELECT id, name, active, core_code, common_code, eval_context, run_as, lang INTO p
    FROM sync.project WHERE name = sync_export_project.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" does not exist', sync_export_project.name
            USING ERRCODE = 'no_data_found',
                  HINT = 'List the projects with: SELECT name FROM sync.project ORDER BY name;';
    END IF;
    SELECT d.name, d.broken_reason INTO broken FROM sync.db_trigger d
    WHERE d.project_id = p.id AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.table_name)
    ORDER BY d.name COLLATE "C" LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'db trigger "%" of project "%" watches a table that no longer exists (%)',
                        broken.name, p.name, coalesce(broken.broken_reason, 'dropped')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('A document must name existing tables: point it to one (UPDATE sync.db_trigger SET table_name = ''schema.table'' WHERE project_id = %s AND name = %L) or delete it, then export again.', p.id, broken.name);
    END IF;
    -- A webhook's token is its URL's credential: exported only for those who may read
    -- it (developers, admins). Each statement is planned when it runs, so a sync_user
    -- never reaches the one reading the column.
    IF has_column_privilege('sync.webhook_trigger', 'token', 'SELECT') THEN
        hooks := coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', w.name, 'task', t.name, 'active', w.active,
                                                'content_type', w.content_type, 'token', w.token)
                             ORDER BY w.name COLLATE "C")
            FROM sync.webhook_trigger w JOIN sync.task t ON t.id = w.task_id
            WHERE w.project_id = p.id), '[]');
    ELSE
        hooks := coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', w.name, 'task', t.name, 'active', w.active,
                                                'content_type', w.content_type, 'token', NULL)
                             ORDER BY w.name COLLATE "C")
            FROM sync.webhook_trigger w JOIN sync.task t ON t.id = w.task_id
            WHERE w.project_id = p.id), '[]');
    END IF;
    RETURN jsonb_build_object(
        'pg_sync_export', 1,
        'name', p.name,
        'active', p.active,
        'core_code', p.core_code,
        'common_code', p.common_code,
        'eval_context', to_jsonb(p.eval_context),
        'run_as', p.run_as,
        'lang', p.lang,
        'params', coalesce((
            SELECT jsonb_agg(jsonb_build_object('key', key, 'value', value, 'initial_value', initial_value,
                                                'description', description, 'url', url)
                             ORDER BY key COLLATE "C")
            FROM sync.project_param WHERE project_id = p.id), '[]'),
        'texts', coalesce((
            SELECT jsonb_agg(jsonb_build_object('key', key, 'lang', lang, 'value', value)
                             ORDER BY key COLLATE "C", lang COLLATE "C")
            FROM sync.project_text WHERE project_id = p.id), '[]'),
        'secrets', coalesce((
            SELECT jsonb_agg(jsonb_build_object('key', key) ORDER BY key COLLATE "C")
            FROM sync.project_secret WHERE project_id = p.id), '[]'),
        'tasks', coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', name, 'code', code, 'active', active,
                                                'time_limit', time_limit)
                             ORDER BY name COLLATE "C")
            FROM sync.task WHERE project_id = p.id), '[]'),
        'cron_triggers', coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', c.name, 'task', t.name, 'active', c.active,
                                                'interval', c."interval", 'schedule', c.schedule,
                                                'timezone', c.timezone, 'next_run_at', c.next_run_at,
                                                'calls_left', c.calls_left, 'run_as', c.run_as)
                             ORDER BY c.name COLLATE "C")
            FROM sync.cron_trigger c JOIN sync.task t ON t.id = c.task_id
            WHERE c.project_id = p.id), '[]'),
        'db_triggers', coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', d.name, 'task', t.name, 'active', d.active,
                                                'table_name', format('%I.%I', n.nspname, r.relname),
                                                'event', d.event, 'apply_on', d.apply_on,
                                                'before_update', d.before_update,
                                                'watched_columns', d.watched_columns,
                                                'date_column', d.date_column,
                                                'time_offset', d.time_offset,
                                                'chunk_size', d.chunk_size)
                             ORDER BY d.name COLLATE "C")
            FROM sync.db_trigger d JOIN sync.task t ON t.id = d.task_id
            JOIN pg_class r ON r.oid = d.table_name
            JOIN pg_namespace n ON n.oid = r.relnamespace
            WHERE d.project_id = p.id), '[]'),
        'webhook_triggers', hooks,
        'button_triggers', coalesce((
            SELECT jsonb_agg(jsonb_build_object('name', b.name, 'task', t.name, 'active', b.active,
                                                'description', b.description)
                             ORDER BY b.name COLLATE "C")
            FROM sync.button_trigger b JOIN sync.task t ON t.id = b.task_id
            WHERE b.project_id = p.id), '[]'));
END
$$;
COMMENT ON FUNCTION sync_export_project(text) IS 'The definition of a project as a JSON document (format "pg_sync_export": 1): params, texts, secret keys (never values), tasks and triggers; sync_import_project takes it back.';

------------------------------------------------------------------------------------
-- Import
------------------------------------------------------------------------------------

-- SECURITY INVOKER, and the caller's search_path: a table_name written by hand
-- ('orders') resolves as it would in the caller's own INSERT.
CREATE FUNCTION sync_import_project(doc jsonb, replace boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    pname text;
    pid bigint;
    v_active boolean;
    v_core text;
    v_common text;
    v_eval text[];
    v_run_as name;
    v_lang text;
    changed text[];
    params jsonb := coalesce(doc -> 'params', '[]');
    texts jsonb := coalesce(doc -> 'texts', '[]');
    secrets jsonb := coalesce(doc -> 'secrets', '[]');
    tasks jsonb := coalesce(doc -> 'tasks', '[]');
    crons jsonb := coalesce(doc -> 'cron_triggers', '[]');
    dbts jsonb := coalesce(doc -> 'db_triggers', '[]');
    hooks jsonb := coalesce(doc -> 'webhook_triggers', '[]');
    buttons jsonb := coalesce(doc -> 'button_triggers', '[]');
    r record;
BEGIN
    PERFORM sync.pio_check_document(doc);
    IF replace IS NULL THEN
        RAISE EXCEPTION 'replace must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave it out for false.';
    END IF;
    pname := doc ->> 'name';
    v_active := coalesce((doc -> 'active')::boolean, false);
    v_core := coalesce(doc ->> 'core_code', '');
    v_common := coalesce(doc ->> 'common_code', '');
    v_eval := ARRAY(SELECT jsonb_array_elements_text(coalesce(doc -> 'eval_context', '[]')));
    v_run_as := doc ->> 'run_as';
    v_lang := coalesce(doc ->> 'lang', 'en_US');
    IF NOT sync.is_lang(v_lang) THEN
        PERFORM sync.pio_fail('lang', format('is %s, not a language code', to_jsonb(v_lang)),
                              'Use a code such as "en_US" or "de_DE": the project''s default language.');
    END IF;

    -- Tables first: a db trigger of a missing table cannot be written at all.
    FOR r IN SELECT format('db_triggers[%s].table_name', n - 1) AS path, e ->> 'table_name' AS tbl
             FROM jsonb_array_elements(dbts) WITH ORDINALITY AS a(e, n) ORDER BY n
    LOOP
        BEGIN
            IF to_regclass(r.tbl) IS NULL THEN
                RAISE EXCEPTION 'invalid project document: % is %, a table that does not exist', r.path, to_jsonb(r.tbl)
                    USING ERRCODE = 'undefined_table',
                          HINT = 'Create the table before importing the project: db triggers watch tables of this database (names are schema-qualified, as in "public.orders").';
            END IF;
        EXCEPTION WHEN invalid_name OR syntax_error THEN
            PERFORM sync.pio_fail(r.path, format('is %s, not a table name', to_jsonb(r.tbl)));
        END;
    END LOOP;

    ---------------------------------------------------------------- the project row
    SELECT id INTO pid FROM sync.project WHERE name = pname FOR UPDATE;
    IF FOUND AND NOT replace THEN
        RAISE EXCEPTION 'project "%" already exists', pname
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Pass replace => true to update it in place (sync_import_project(doc, replace => true); sync_worker import FILE --replace), or change "name" in the document to import a copy.';
    END IF;
    IF pid IS NULL THEN
        changed := array_remove(ARRAY[CASE WHEN v_core <> '' THEN 'core_code' END,
                                      CASE WHEN v_eval <> '{}' THEN 'eval_context' END,
                                      CASE WHEN v_run_as IS NOT NULL THEN 'run_as' END], NULL);
        BEGIN
            IF changed = '{}' THEN
                INSERT INTO sync.project (name, active, common_code, lang)
                VALUES (pname, v_active, v_common, v_lang) RETURNING id INTO pid;
            ELSE
                PERFORM sync.pio_require(sync.pio_may('sync.project', changed, 'INSERT'),
                    format('set %s of project "%s"', array_to_string(changed, ', '), pname));
                INSERT INTO sync.project (name, active, common_code, lang, core_code, eval_context, run_as)
                VALUES (pname, v_active, v_common, v_lang, v_core, v_eval, v_run_as) RETURNING id INTO pid;
            END IF;
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'project "%" already exists', pname
                USING ERRCODE = 'duplicate_object',
                      HINT = 'It was created while this import ran; pass replace => true to update it in place.';
        END;
    ELSE
        UPDATE sync.project SET active = v_active, common_code = v_common, lang = v_lang
        WHERE id = pid AND (active, common_code, lang) IS DISTINCT FROM (v_active, v_common, v_lang);
        SELECT array_remove(ARRAY[CASE WHEN core_code IS DISTINCT FROM v_core THEN 'core_code' END,
                                  CASE WHEN eval_context IS DISTINCT FROM v_eval THEN 'eval_context' END,
                                  CASE WHEN run_as IS DISTINCT FROM v_run_as THEN 'run_as' END], NULL)
          INTO changed FROM sync.project WHERE id = pid;
        IF changed <> '{}' THEN
            PERFORM sync.pio_require(sync.pio_may('sync.project', changed, 'UPDATE'),
                format('change %s of project "%s"', array_to_string(changed, ', '), pname));
            UPDATE sync.project SET core_code = v_core, eval_context = v_eval, run_as = v_run_as
            WHERE id = pid;
        END IF;
    END IF;

    ---------------------------------------------------------------- params and texts
    -- A param's value is the user's: a new param takes the document's value (or,
    -- empty, its initial_value through param_fill_value); an existing one keeps its own.
    DELETE FROM sync.project_param p
    WHERE p.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(params) e WHERE e ->> 'key' = p.key);
    INSERT INTO sync.project_param AS p (project_id, key, value, initial_value, description, url)
    SELECT pid, x.key, x.value, x.initial_value, x.description, x.url
    FROM jsonb_to_recordset(params) AS x(key text, value text, initial_value text, description text, url text)
    ON CONFLICT (project_id, key) DO UPDATE
        SET initial_value = EXCLUDED.initial_value, description = EXCLUDED.description, url = EXCLUDED.url
        WHERE (p.initial_value, p.description, p.url)
              IS DISTINCT FROM (EXCLUDED.initial_value, EXCLUDED.description, EXCLUDED.url);

    DELETE FROM sync.project_text t
    WHERE t.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(texts) e
                      WHERE e ->> 'key' = t.key AND coalesce(e ->> 'lang', 'en_US') = t.lang);
    INSERT INTO sync.project_text AS t (project_id, key, lang, value)
    SELECT pid, x.key, coalesce(x.lang, 'en_US'), coalesce(x.value, '')
    FROM jsonb_to_recordset(texts) AS x(key text, lang text, value text)
    ON CONFLICT (project_id, key, lang) DO UPDATE SET value = EXCLUDED.value
        WHERE t.value IS DISTINCT FROM EXCLUDED.value;

    ---------------------------------------------------------------- secrets (keys only)
    -- The document lists the keys; values never travel. Keys it lacks go (with their
    -- values), new keys come with a NULL value for an admin to set, others are kept.
    SELECT array_agg(s.key ORDER BY s.key COLLATE "C") AS keys INTO r FROM sync.project_secret s
    WHERE s.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(secrets) e WHERE e ->> 'key' = s.key);
    IF r.keys IS NOT NULL THEN
        PERFORM sync.pio_require(has_table_privilege('sync.project_secret', 'DELETE'),
            format('remove secrets %s of project "%s"', array_to_string(r.keys, ', '), pname));
        DELETE FROM sync.project_secret s WHERE s.project_id = pid AND s.key = ANY (r.keys);
    END IF;
    SELECT array_agg(x.key ORDER BY x.key COLLATE "C") AS keys INTO r
    FROM jsonb_to_recordset(secrets) AS x(key text)
    WHERE NOT EXISTS (SELECT 1 FROM sync.project_secret s WHERE s.project_id = pid AND s.key = x.key);
    IF r.keys IS NOT NULL THEN
        PERFORM sync.pio_require(sync.pio_may('sync.project_secret', '{project_id,key}', 'INSERT'),
            format('add secrets %s to project "%s"', array_to_string(r.keys, ', '), pname));
        INSERT INTO sync.project_secret (project_id, key) SELECT pid, k FROM unnest(r.keys) k;
    END IF;

    ---------------------------------------------------------------- tasks
    -- Matched by name: a task that stays keeps its id, jobs and logs.
    DELETE FROM sync.task t
    WHERE t.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(tasks) e WHERE e ->> 'name' = t.name);
    INSERT INTO sync.task AS t (project_id, name, code, active, time_limit)
    SELECT pid, x.name, coalesce(x.code, ''), coalesce(x.active, true), x.time_limit
    FROM jsonb_to_recordset(tasks) AS x(name text, code text, active boolean, time_limit interval)
    ON CONFLICT (project_id, name) DO UPDATE
        SET code = EXCLUDED.code, active = EXCLUDED.active, time_limit = EXCLUDED.time_limit
        WHERE (t.code, t.active, t.time_limit)
              IS DISTINCT FROM (EXCLUDED.code, EXCLUDED.active, EXCLUDED.time_limit);

    ---------------------------------------------------------------- triggers
    -- Removed ones first, of every kind: a name may move from one kind to another.
    DELETE FROM sync.cron_trigger c WHERE c.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(crons) e WHERE e ->> 'name' = c.name);
    DELETE FROM sync.db_trigger d WHERE d.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(dbts) e WHERE e ->> 'name' = d.name);
    DELETE FROM sync.webhook_trigger w WHERE w.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(hooks) e WHERE e ->> 'name' = w.name);
    DELETE FROM sync.button_trigger b WHERE b.project_id = pid
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(buttons) e WHERE e ->> 'name' = b.name);

    -- Cron: a trigger that stays keeps its next_run_at and calls_left (a changed schedule
    -- or time zone starts over from its first run after now: sync.cron_trigger_check).
    UPDATE sync.cron_trigger c
       SET task_id = t.id, active = coalesce(x.active, true), "interval" = x."interval",
           schedule = x.schedule, timezone = coalesce(x.timezone, 'UTC')
      FROM jsonb_to_recordset(crons)
           AS x(name text, task text, active boolean, "interval" interval, schedule text, timezone text),
           sync.task t
     WHERE c.project_id = pid AND c.name = x.name AND t.project_id = pid AND t.name = x.task
       AND (c.task_id, c.active, c."interval", c.schedule, c.timezone)
           IS DISTINCT FROM (t.id, coalesce(x.active, true), x."interval", x.schedule, coalesce(x.timezone, 'UTC'));
    SELECT array_agg(c.name ORDER BY c.name COLLATE "C") AS names INTO r
    FROM sync.cron_trigger c JOIN jsonb_to_recordset(crons) AS x(name text, run_as name) ON x.name = c.name
    WHERE c.project_id = pid AND c.run_as IS DISTINCT FROM x.run_as;
    IF r.names IS NOT NULL THEN
        PERFORM sync.pio_require(sync.pio_may('sync.cron_trigger', '{run_as}', 'UPDATE'),
            format('change run_as of cron triggers %s of project "%s"', array_to_string(r.names, ', '), pname));
        UPDATE sync.cron_trigger c SET run_as = x.run_as
          FROM jsonb_to_recordset(crons) AS x(name text, run_as name)
         WHERE c.project_id = pid AND c.name = x.name AND c.run_as IS DISTINCT FROM x.run_as;
    END IF;
    SELECT array_agg(x.name ORDER BY x.name COLLATE "C") AS names INTO r
    FROM jsonb_to_recordset(crons) AS x(name text, run_as name)
    WHERE x.run_as IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sync.cron_trigger c WHERE c.project_id = pid AND c.name = x.name);
    IF r.names IS NOT NULL THEN
        PERFORM sync.pio_require(sync.pio_may('sync.cron_trigger', '{run_as}', 'INSERT'),
            format('set run_as of cron triggers %s of project "%s"', array_to_string(r.names, ', '), pname));
    END IF;
    -- Two statements, so that one without run_as does not name that column.
    INSERT INTO sync.cron_trigger (task_id, name, active, "interval", schedule, timezone, next_run_at, calls_left)
    SELECT t.id, x.name, coalesce(x.active, true), x."interval", x.schedule, coalesce(x.timezone, 'UTC'),
           coalesce(x.next_run_at, now()), coalesce(x.calls_left, -1)
    FROM jsonb_to_recordset(crons)
         AS x(name text, task text, active boolean, "interval" interval, schedule text, timezone text,
              next_run_at timestamptz, calls_left integer, run_as name)
    JOIN sync.task t ON t.project_id = pid AND t.name = x.task
    WHERE x.run_as IS NULL
      AND NOT EXISTS (SELECT 1 FROM sync.cron_trigger c WHERE c.project_id = pid AND c.name = x.name)
    ORDER BY x.name COLLATE "C";
    IF r.names IS NOT NULL THEN
        INSERT INTO sync.cron_trigger (task_id, name, active, "interval", schedule, timezone, next_run_at,
                                       calls_left, run_as)
        SELECT t.id, x.name, coalesce(x.active, true), x."interval", x.schedule, coalesce(x.timezone, 'UTC'),
               coalesce(x.next_run_at, now()), coalesce(x.calls_left, -1), x.run_as
        FROM jsonb_to_recordset(crons)
             AS x(name text, task text, active boolean, "interval" interval, schedule text, timezone text,
                  next_run_at timestamptz, calls_left integer, run_as name)
        JOIN sync.task t ON t.project_id = pid AND t.name = x.task
        WHERE x.name = ANY (r.names)
        ORDER BY x.name COLLATE "C";
    END IF;

    -- DB triggers: writing the row installs (or reinstalls) its PostgreSQL triggers.
    UPDATE sync.db_trigger d
       SET task_id = t.id, active = coalesce(x.active, true), table_name = to_regclass(x.table_name),
           event = x.event, apply_on = x.apply_on, before_update = x.before_update,
           watched_columns = x.watched_columns, date_column = x.date_column,
           time_offset = coalesce(x.time_offset, '0'), chunk_size = coalesce(x.chunk_size, 1000)
      FROM jsonb_to_recordset(dbts)
           AS x(name text, task text, active boolean, table_name text, event text, apply_on text,
                before_update text, watched_columns text[], date_column name, time_offset interval,
                chunk_size integer),
           sync.task t
     WHERE d.project_id = pid AND d.name = x.name AND t.project_id = pid AND t.name = x.task
       AND (d.task_id, d.active, d.table_name, d.event, d.apply_on, d.before_update,
            d.watched_columns, d.date_column, d.time_offset, d.chunk_size)
           IS DISTINCT FROM
           (t.id, coalesce(x.active, true), to_regclass(x.table_name), x.event, x.apply_on,
            x.before_update, x.watched_columns, x.date_column, coalesce(x.time_offset, '0'),
            coalesce(x.chunk_size, 1000));
    INSERT INTO sync.db_trigger (task_id, name, active, table_name, event, apply_on, before_update,
                                 watched_columns, date_column, time_offset, chunk_size)
    SELECT t.id, x.name, coalesce(x.active, true), to_regclass(x.table_name), x.event, x.apply_on,
           x.before_update, x.watched_columns, x.date_column, coalesce(x.time_offset, '0'),
           coalesce(x.chunk_size, 1000)
    FROM jsonb_to_recordset(dbts)
         AS x(name text, task text, active boolean, table_name text, event text, apply_on text,
              before_update text, watched_columns text[], date_column name, time_offset interval,
              chunk_size integer)
    JOIN sync.task t ON t.project_id = pid AND t.name = x.task
    WHERE NOT EXISTS (SELECT 1 FROM sync.db_trigger d WHERE d.project_id = pid AND d.name = x.name)
    ORDER BY x.name COLLATE "C";

    -- Webhooks: one that stays keeps its token (its URL) and signing secret; a new one
    -- takes the document's token, or a fresh one when it has none.
    UPDATE sync.webhook_trigger w
       SET task_id = t.id, active = coalesce(x.active, true), content_type = coalesce(x.content_type, 'json')
      FROM jsonb_to_recordset(hooks) AS x(name text, task text, active boolean, content_type text),
           sync.task t
     WHERE w.project_id = pid AND w.name = x.name AND t.project_id = pid AND t.name = x.task
       AND (w.task_id, w.active, w.content_type)
           IS DISTINCT FROM (t.id, coalesce(x.active, true), coalesce(x.content_type, 'json'));
    SELECT x.name, w.name AS other, p.name AS other_project INTO r
    FROM jsonb_to_recordset(hooks) AS x(name text, token text)
    JOIN sync.webhook_trigger w ON w.token = x.token
    JOIN sync.project p ON p.id = w.project_id
    WHERE NOT EXISTS (SELECT 1 FROM sync.webhook_trigger o WHERE o.project_id = pid AND o.name = x.name)
    ORDER BY x.name COLLATE "C" LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'webhook trigger "%": its token is already the token of webhook trigger "%" of project "%"',
                        r.name, r.other, r.other_project
            USING ERRCODE = 'unique_violation',
                  HINT = 'A token is the secret part of a webhook URL and is unique: set "token" to null in the document for a fresh one (e.g. when importing a copy of a project).';
    END IF;
    INSERT INTO sync.webhook_trigger (task_id, name, active, content_type)
    SELECT t.id, x.name, coalesce(x.active, true), coalesce(x.content_type, 'json')
    FROM jsonb_to_recordset(hooks)
         AS x(name text, task text, active boolean, content_type text, token text)
    JOIN sync.task t ON t.project_id = pid AND t.name = x.task
    WHERE x.token IS NULL
      AND NOT EXISTS (SELECT 1 FROM sync.webhook_trigger w WHERE w.project_id = pid AND w.name = x.name)
    ORDER BY x.name COLLATE "C";
    INSERT INTO sync.webhook_trigger (task_id, name, active, content_type, token)
    SELECT t.id, x.name, coalesce(x.active, true), coalesce(x.content_type, 'json'), x.token
    FROM jsonb_to_recordset(hooks)
         AS x(name text, task text, active boolean, content_type text, token text)
    JOIN sync.task t ON t.project_id = pid AND t.name = x.task
    WHERE x.token IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sync.webhook_trigger w WHERE w.project_id = pid AND w.name = x.name)
    ORDER BY x.name COLLATE "C";

    -- Buttons.
    UPDATE sync.button_trigger b
       SET task_id = t.id, active = coalesce(x.active, true), description = x.description
      FROM jsonb_to_recordset(buttons) AS x(name text, task text, active boolean, description text),
           sync.task t
     WHERE b.project_id = pid AND b.name = x.name AND t.project_id = pid AND t.name = x.task
       AND (b.task_id, b.active, b.description)
           IS DISTINCT FROM (t.id, coalesce(x.active, true), x.description);
    INSERT INTO sync.button_trigger (task_id, name, active, description)
    SELECT t.id, x.name, coalesce(x.active, true), x.description
    FROM jsonb_to_recordset(buttons)
         AS x(name text, task text, active boolean, description text)
    JOIN sync.task t ON t.project_id = pid AND t.name = x.task
    WHERE NOT EXISTS (SELECT 1 FROM sync.button_trigger b WHERE b.project_id = pid AND b.name = x.name)
    ORDER BY x.name COLLATE "C";

    RETURN pid;
END
$$;
COMMENT ON FUNCTION sync_import_project(jsonb, boolean) IS 'Create a project from a sync_export_project document (all or nothing) and return its id; with replace => true, update an existing one in place, keeping param values, secret values, webhook tokens and cron schedules.';

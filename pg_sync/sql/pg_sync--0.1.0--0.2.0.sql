-- pg_sync 0.1.0 -> 0.2.0: trust boundaries. Run by ALTER EXTENSION pg_sync UPDATE.
--
-- Executors log in as sync_executor (no rights of its own; token-checked batch
-- functions), jobs are queued through SECURITY DEFINER functions that record the caller,
-- trigger functions refuse foreign tables, grants are narrowed, and running jobs can be
-- cancelled. Existing rows are kept; workers of version 0.1 must be stopped first (a
-- 0.2 worker refuses a 0.1 extension and the other way round).
-- First: refuse while a worker runs (nothing changes; see the function's comment).
CREATE FUNCTION sync.refuse_upgrade_with_live_workers(target text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    live text;
BEGIN
    SELECT string_agg(w.id::text || coalesce(' on ' || w.hostname, ''), ', ' ORDER BY w.id) INTO live
    FROM sync.live_workers() l(id) LEFT JOIN sync.worker w ON w.id = l.id;
    IF live IS NOT NULL THEN
        RAISE EXCEPTION 'pg_sync cannot be upgraded to % while workers are running (worker %)', target, live
            USING ERRCODE = 'object_in_use',
                  HINT = 'Stop every sync_worker of this database (systemctl stop sync_worker on each host), run ALTER EXTENSION pg_sync UPDATE again, then start workers of the new version.';
    END IF;
END
$$;
COMMENT ON FUNCTION sync.refuse_upgrade_with_live_workers(text) IS 'Called first by every upgrade script: raises object_in_use (nothing changes) while any worker of this database is alive.';
SELECT sync.refuse_upgrade_with_live_workers('0.2.0');
CREATE FUNCTION sync.version() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_sync'
$$;
COMMENT ON FUNCTION sync.version() IS 'The pg_sync release installed in this database (ALTER EXTENSION pg_sync UPDATE changes it).';
-- The scheduling clock, read by every claim: plpgsql now (its plan is kept).
CREATE OR REPLACE FUNCTION sync.clock() RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN pg_catalog.now() + coalesce((SELECT s.value::interval FROM sync.setting s
                                        WHERE s.key = 'clock_offset'), interval '0');
END
$$;
COMMENT ON FUNCTION sync.clock() IS 'now() plus the clock_offset setting (tests only); the scheduling clock of pg_sync.';
-- Roles the new grants name (cluster-wide; another database may have made them).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sync_worker') THEN
        BEGIN
            CREATE ROLE sync_worker NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sync_executor') THEN
        BEGIN
            CREATE ROLE sync_executor NOLOGIN NOINHERIT;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
END
$$;
-- The caller of SECURITY DEFINER functions (Rust, pg_sync/src/session.rs).
CREATE FUNCTION sync."caller"() RETURNS TEXT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'caller_wrapper';
------------------------------------------------------------------------------------
-- sql/schema.sql
------------------------------------------------------------------------------------
-- Languages (issue 13): the project's default language and the rule of a job's.
CREATE FUNCTION sync.is_lang(code text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT code ~ '^[a-z]{2,3}(_[A-Z]{2})?$'
$$;
COMMENT ON FUNCTION sync.is_lang(text) IS 'Whether the text is a language code such as en_US, de_DE or fr (two or three lower-case letters, optionally _ and two upper-case letters).';
ALTER TABLE sync.project ADD COLUMN lang text NOT NULL DEFAULT 'en_US' CHECK (sync.is_lang(lang));
-- One home for what a language code is: the texts' check uses it too.
ALTER TABLE sync.project_text DROP CONSTRAINT project_text_lang_check,
    ADD CONSTRAINT project_text_lang_check CHECK (sync.is_lang(lang));
COMMENT ON COLUMN sync.project.lang IS 'Default language of the project''s jobs (texts.KEY, get_lang()) when whoever caused a job set no sync.lang; cron and webhook jobs always use it.';
COMMENT ON COLUMN sync.project_text.lang IS 'Language code such as en_US; a key missing in the job''s language is taken from the project''s language, then from en_US.';
COMMENT ON COLUMN sync.job.lang IS 'Language of texts.KEY for the job (get_lang): set when the job is queued, from whoever caused it (sync.job_lang); NULL (jobs queued before pg_sync 0.2 or inserted by hand) = the project''s language.';
CREATE FUNCTION sync.job_lang(project_id bigint, who name) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    session_lang text := nullif(pg_catalog.current_setting('sync.lang', true), '');
    v text;
BEGIN
    IF session_lang IS NOT NULL THEN
        IF sync.is_lang(session_lang) THEN
            RETURN session_lang;
        END IF;
        RAISE WARNING 'sync.lang = % is not a language code; the job uses the next language', pg_catalog.quote_literal(session_lang)
            USING HINT = 'Use a code such as en_US or de_DE: SET sync.lang = ''de_DE'';';
    END IF;
    SELECT pg_catalog.substr(c, pg_catalog.length('sync.lang=') + 1) INTO v
    FROM pg_catalog.pg_db_role_setting s
    JOIN pg_catalog.pg_roles r ON r.oid = s.setrole AND r.rolname = who
    CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c
    WHERE s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                WHERE d.datname = pg_catalog.current_database()))
      AND c LIKE 'sync.lang=%'
    ORDER BY s.setdatabase DESC
    LIMIT 1;
    IF nullif(v, '') IS NOT NULL THEN
        IF sync.is_lang(v) THEN
            RETURN v;
        END IF;
        -- The login role's setting is also the session's: warned about above.
        IF v IS DISTINCT FROM session_lang THEN
            RAISE WARNING 'the sync.lang setting of role % (%) is not a language code; the job uses the project''s language', who, pg_catalog.quote_literal(v)
                USING HINT = pg_catalog.format('Fix it: ALTER ROLE %I SET sync.lang = ''de_DE'';', who);
        END IF;
    END IF;
    RETURN coalesce((SELECT p.lang FROM sync.project p WHERE p.id = job_lang.project_id), 'en_US');
END
$$;
COMMENT ON FUNCTION sync.job_lang(bigint, name) IS 'The language of a job caused now by role who: this session''s sync.lang, else who''s ALTER ROLE ... SET sync.lang, else the project''s lang; invalid values are skipped with a WARNING.';
ALTER TABLE sync.worker ADD COLUMN token_hash bytea;
COMMENT ON COLUMN sync.worker.token_hash IS 'SHA-256 of the token its executors show to the batch functions (sync.batch_*); readable by admins only.';
CREATE OR REPLACE FUNCTION sync.notify_new_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'sync.job'::regclass THEN
        RAISE EXCEPTION 'sync.notify_new_jobs() only runs as the trigger of sync.job'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    -- Once per transaction: a bulk insert queues one event per row.
    IF current_setting('sync.doorbell_checked', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('sync.doorbell_checked', 'on', true);
    UPDATE sync.doorbell SET rung = true WHERE NOT rung;
    IF FOUND THEN
        PERFORM pg_notify('sync_job', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION sync.trigger_register_name() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- Not named `kind`: that is also a column of sync.trigger_name (ambiguous).
    trg_kind text := TG_ARGV[0];
BEGIN
    -- SECURITY DEFINER (sql/roles.sql): only on the four trigger tables, for their kind.
    IF TG_RELID IS DISTINCT FROM to_regclass('sync.' || trg_kind || '_trigger') THEN
        RAISE EXCEPTION 'sync.trigger_register_name() only runs as the trigger of sync.<kind>_trigger'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM sync.trigger_name WHERE trigger_name.kind = trg_kind AND trigger_id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        BEGIN
            INSERT INTO sync.trigger_name (project_id, name, kind, trigger_id)
            VALUES (NEW.project_id, NEW.name, trg_kind, NEW.id);
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'a trigger named "%" already exists in this project', NEW.name
                USING ERRCODE = 'unique_violation',
                      HINT = 'Trigger names are unique per project across cron, db, webhook and button triggers; choose another name.';
        END;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION sync.bump_project_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- SECURITY DEFINER (sql/roles.sql): only on pg_sync's own tables.
    IF TG_TABLE_SCHEMA <> 'sync' OR TG_RELID NOT IN (
           'sync.project'::regclass, 'sync.project_param'::regclass, 'sync.project_text'::regclass,
           'sync.project_secret'::regclass, 'sync.task'::regclass, 'sync.cron_trigger'::regclass,
           'sync.db_trigger'::regclass, 'sync.webhook_trigger'::regclass, 'sync.button_trigger'::regclass) THEN
        RAISE EXCEPTION 'sync.bump_project_version() only runs as a trigger of pg_sync''s project tables'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    IF TG_TABLE_NAME = 'project' THEN
        IF TG_OP = 'UPDATE' THEN
            NEW.version := OLD.version + 1;
            NEW.updated_at := now();
        END IF;
        RETURN NEW;
    END IF;
    UPDATE sync.project SET version = version + 1
    WHERE id IN (SELECT project_id FROM changed_rows);
    RETURN NULL;
END
$$;
------------------------------------------------------------------------------------
-- sql/jobs.sql
------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION sync.add_job(
    project_id   bigint,
    task_id      bigint,
    handler      text,
    args         jsonb DEFAULT '{}',
    priority     integer DEFAULT 10,
    eta          timestamptz DEFAULT NULL,
    max_retries  integer DEFAULT 5,
    description  text DEFAULT NULL,
    identity_key text DEFAULT NULL,
    parent_id    bigint DEFAULT NULL,
    user_name    name DEFAULT NULL,
    lang         text DEFAULT NULL,
    trigger_kind text DEFAULT 'job',
    trigger_id   bigint DEFAULT NULL,
    trigger_name text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    IF add_job.identity_key IS NULL THEN
        INSERT INTO sync.job AS j (project_id, task_id, trigger_kind, trigger_id, trigger_name,
                                   handler, args, priority, eta, max_retries, description,
                                   identity_key, parent_id, user_name, lang)
        VALUES (add_job.project_id, add_job.task_id, add_job.trigger_kind, add_job.trigger_id,
                add_job.trigger_name, add_job.handler, coalesce(add_job.args, '{}'),
                coalesce(add_job.priority, 10), coalesce(add_job.eta, sync.clock()),
                coalesce(add_job.max_retries, 5), add_job.description, add_job.identity_key,
                add_job.parent_id, coalesce(add_job.user_name, current_user),
                coalesce(add_job.lang, (SELECT p.lang FROM sync.project p WHERE p.id = add_job.project_id)))
        RETURNING j.id INTO new_id;
        RETURN new_id;
    END IF;
    -- The key is held while the job has its queue row (pending or running); the unique
    -- index job_identity there refuses a second holder, even one queued by a transaction
    -- not committed yet (the insert waits for it). Only keyed jobs pay for the
    -- subtransaction. Three tries: the holder may finish, or its transaction roll back,
    -- between the look-up and the insert.
    FOR i IN 1..3 LOOP
        SELECT q.id INTO new_id FROM sync.job_queue q
        WHERE q.project_id = add_job.project_id AND q.identity_key = add_job.identity_key;
        IF FOUND THEN
            RETURN new_id;
        END IF;
        BEGIN
            INSERT INTO sync.job AS j (project_id, task_id, trigger_kind, trigger_id, trigger_name,
                                       handler, args, priority, eta, max_retries, description,
                                       identity_key, parent_id, user_name, lang)
            VALUES (add_job.project_id, add_job.task_id, add_job.trigger_kind, add_job.trigger_id,
                    add_job.trigger_name, add_job.handler, coalesce(add_job.args, '{}'),
                    coalesce(add_job.priority, 10), coalesce(add_job.eta, sync.clock()),
                    coalesce(add_job.max_retries, 5), add_job.description, add_job.identity_key,
                    add_job.parent_id, coalesce(add_job.user_name, current_user),
                    coalesce(add_job.lang, (SELECT p.lang FROM sync.project p WHERE p.id = add_job.project_id)))
            RETURNING j.id INTO new_id;
            RETURN new_id;
        EXCEPTION WHEN unique_violation THEN
            NULL; -- only job_identity can refuse it (ids come from the sequence): look again
        END;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue job %: its identity key % keeps changing hands', handler, identity_key
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the statement.';
END
$$;
COMMENT ON FUNCTION sync.add_job(bigint, bigint, text, jsonb, integer, timestamptz, integer, text, text, bigint, name, text, text, bigint, text)
    IS 'Enqueue a job (add_job of task code). With an identity_key already held by a pending or running job of the project, nothing is created and that job''s id is returned. lang NULL: the project''s language.';
CREATE OR REPLACE FUNCTION sync.enqueue_due_crons() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := sync.clock();
    missed text;
    missed_cap integer;
    c record;
    next_at timestamptz;
    k double precision;
    runs timestamptz[];
    run_at timestamptz;
    most integer;
    n integer := 0;
BEGIN
    SELECT m.policy, m.cap INTO missed, missed_cap FROM sync.cron_missed_runs() m;
    FOR c IN
        SELECT ct.id, ct.task_id, ct.project_id, ct.name, ct."interval", ct.schedule, ct.timezone,
               ct.next_run_at, ct.calls_left, ct.run_as, p.lang
        FROM sync.cron_trigger ct
        JOIN sync.task t ON t.id = ct.task_id
        JOIN sync.project p ON p.id = ct.project_id
        WHERE ct.active AND ct.calls_left <> 0 AND ct.next_run_at <= now_
          AND t.active AND p.active
        ORDER BY ct.next_run_at
        FOR UPDATE OF ct SKIP LOCKED
    LOOP
        most := CASE missed WHEN 'each' THEN missed_cap ELSE 1 END;
        IF c.calls_left > 0 THEN
            most := least(most, c.calls_left);
        END IF;
        IF c.schedule IS NOT NULL THEN
            next_at := sync.cron_next(c.schedule, c.timezone, now_);
            IF missed <> 'once' THEN
                runs := sync.cron_runs_between(c.schedule, c.timezone, c.next_run_at, now_, most);
            END IF;
        ELSE
            next_at := c.next_run_at + c."interval";
            IF next_at <= now_ THEN
                -- Jump close with arithmetic (months count as 30 days there), then settle
                -- on the first whole interval after now_ by stepping.
                k := floor(extract(epoch FROM now_ - c.next_run_at) / extract(epoch FROM c."interval"));
                next_at := c.next_run_at + c."interval" * k;
                WHILE next_at - c."interval" > now_ LOOP
                    next_at := next_at - c."interval";
                END LOOP;
                WHILE next_at <= now_ LOOP
                    next_at := next_at + c."interval";
                END LOOP;
            END IF;
            IF missed <> 'once' THEN
                runs := '{}';
                run_at := next_at - c."interval";
                WHILE run_at >= c.next_run_at AND cardinality(runs) < most LOOP
                    runs := run_at || runs;
                    run_at := run_at - c."interval";
                END LOOP;
                IF cardinality(runs) = 0 THEN
                    runs := ARRAY[c.next_run_at];
                END IF;
            END IF;
        END IF;
        IF missed = 'skip' THEN
            runs := ARRAY(SELECT r FROM unnest(runs) r WHERE r >= now_ - interval '1 minute');
        END IF;
        IF missed = 'once' THEN
            INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                                  eta, user_name, lang)
            VALUES (c.project_id, c.task_id, 'cron', c.id, c.name, 'handle_cron', now_,
                    coalesce(c.run_as, current_user), c.lang);
            runs := ARRAY[now_];
        ELSE
            INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                                  args, eta, user_name, lang)
            SELECT c.project_id, c.task_id, 'cron', c.id, c.name, 'handle_cron',
                   -- In UTC as exports write timestamps, whatever the worker's session
                   -- TimeZone (which interval arithmetic keeps following, as it did).
                   jsonb_build_object('scheduled_at',
                       regexp_replace(to_char(r AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\.?0+$', '')
                       || '+00:00'),
                   now_, coalesce(c.run_as, current_user), c.lang
            FROM unnest(runs) WITH ORDINALITY AS u(r, i)
            ORDER BY i;
        END IF;
        UPDATE sync.cron_trigger
        SET next_run_at = coalesce(next_at, 'infinity'),
            calls_left = CASE WHEN calls_left > 0 THEN calls_left - cardinality(runs) ELSE calls_left END
        WHERE id = c.id;
        n := n + cardinality(runs);
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.enqueue_due_crons() IS 'Enqueue the due runs of cron triggers (database clock, missed runs as sync.cron_missed_runs() says); safe to call from many workers at once. Returns the number of jobs enqueued.';
CREATE OR REPLACE FUNCTION sync_run_button(project text, trigger_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    new_id bigint;
BEGIN
    SELECT bt.id, bt.task_id, bt.project_id, bt.active, t.active AS task_active,
           t.name AS task, p.active AS project_active
      INTO b
    FROM sync.button_trigger bt
    JOIN sync.project p ON p.id = bt.project_id
    JOIN sync.task t ON t.id = bt.task_id
    WHERE p.name = sync_run_button.project AND bt.name = sync_run_button.trigger_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" has no button trigger named "%"', project, trigger_name
            USING ERRCODE = 'no_data_found',
                  HINT = 'List the buttons with: SELECT p.name, b.name FROM sync.button_trigger b JOIN sync.project p ON p.id = b.project_id;';
    END IF;
    IF NOT b.project_active THEN
        RAISE EXCEPTION 'project "%" is inactive', project
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Activate it first: UPDATE sync.project SET active = true WHERE name = %L;', project);
    END IF;
    IF NOT b.active OR NOT b.task_active THEN
        RAISE EXCEPTION 'button "%" of project "%" is inactive', trigger_name, project
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Activate the button trigger and its task "%s".', b.task);
    END IF;
    INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                          priority, eta, user_name, lang)
    VALUES (b.project_id, b.task_id, 'button', b.id, sync_run_button.trigger_name, 'handle_button',
            0, sync.clock(), sync.caller(), sync.job_lang(b.project_id, sync.caller()))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION sync_run_button(text, text) IS 'Press a button: enqueue handle_button() at top priority (0) and return the job id; a running worker starts it at once. The job''s language is the caller''s sync.lang (sync.job_lang).';

-- Press a button and wait for its outcome, as Sync Studio's buttons do. A procedure,
-- because the job must be committed before a worker can see it; and so SECURITY
-- INVOKER without SET clauses (PostgreSQL allows COMMIT in no other kind): the job is
-- queued through sync_run_button (which checks and records the caller), and waiting
-- reads sync.job with the caller's own rights. Each read takes a new snapshot.
CREATE PROCEDURE sync_press_button(project text, button text, INOUT result jsonb,
                                   timeout interval DEFAULT interval '30 seconds')
LANGUAGE plpgsql AS $$
DECLARE
    job_id bigint;
    j record;
    deadline timestamptz;
    pause double precision := 0.001;
BEGIN
    job_id := public.sync_run_button(project, button);
    COMMIT;
    deadline := pg_catalog.clock_timestamp() + timeout;
    LOOP
        SELECT x.state, x.result, x.error, x.attempts, x.eta INTO j FROM sync.job x WHERE x.id = job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'button "%" of project "%": job % was deleted while it ran', button, project, job_id
                USING ERRCODE = 'no_data_found';
        END IF;
        EXIT WHEN j.state IN ('done', 'failed', 'cancelled') OR (j.state = 'pending' AND j.attempts > 0);
        IF pg_catalog.clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'button "%" of project "%": job % is still % after %', button, project, job_id, j.state, timeout
                USING ERRCODE = 'query_canceled',
                      HINT = pg_catalog.format('Is a sync_worker running? The job stays queued: SELECT state, result, error FROM sync.job WHERE id = %s;', job_id);
        END IF;
        PERFORM pg_catalog.pg_sleep(pause);
        -- 1 ms at first (a worker picks a button up within milliseconds), up to 50 ms.
        pause := least(pause * 1.5, 0.05);
    END LOOP;
    IF j.state = 'done' THEN
        result := j.result;
        RETURN;
    END IF;
    RAISE EXCEPTION 'button "%" of project "%" failed (job %): %', button, project, job_id,
        CASE WHEN j.state = 'pending' THEN pg_catalog.format('%s; it will be retried at %s, or press the button again', pg_catalog.substring(pg_catalog.rtrim(j.error, E' \n'), '[^\n]*$'), j.eta)
             ELSE pg_catalog.substring(pg_catalog.rtrim(coalesce(j.error, j.state), E' \n'), '[^\n]*$') END
        USING ERRCODE = 'external_routine_exception', DETAIL = coalesce(j.error, ''),
              HINT = pg_catalog.format('The job''s log: SELECT level, message FROM sync.log_view WHERE job_id = %s ORDER BY created_at;', job_id);
END
$$;
COMMENT ON PROCEDURE sync_press_button(text, text, jsonb, interval) IS 'Press a button and wait (up to timeout, default 30 s) for its outcome: CALL sync_press_button(project, button, NULL) returns the handler''s result, or raises its error with the traceback in DETAIL. Call it outside a transaction block: it commits the job first.';
CREATE FUNCTION sync_add_job(project text, task text, handler text, args jsonb DEFAULT '{}',
                             priority integer DEFAULT 10, eta timestamptz DEFAULT NULL,
                             max_retries integer DEFAULT 5, description text DEFAULT NULL,
                             identity_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    SELECT k.id, k.project_id INTO t
    FROM sync.task k JOIN sync.project p ON p.id = k.project_id
    WHERE p.name = sync_add_job.project AND k.name = sync_add_job.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" has no task named "%"', project, task
            USING ERRCODE = 'no_data_found',
                  HINT = 'List the tasks with: SELECT p.name, t.name FROM sync.task t JOIN sync.project p ON p.id = t.project_id;';
    END IF;
    IF handler IS NULL OR handler !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'handler % is not a Python function name', coalesce(quote_literal(handler), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a function defined in the task code, e.g. ''sync_partner''.';
    END IF;
    IF priority < 0 OR max_retries < 0 THEN
        RAISE EXCEPTION 'priority and max_retries must not be negative'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'priority 0 is the highest; max_retries 0 retries forever.';
    END IF;
    RETURN sync.add_job(t.project_id, t.id, handler, args, priority, eta, max_retries, description,
                        identity_key, NULL, sync.caller(), sync.job_lang(t.project_id, sync.caller()),
                        'job', NULL, NULL);
END
$$;
COMMENT ON FUNCTION sync_add_job(text, text, text, jsonb, integer, timestamptz, integer, text, text)
    IS 'Queue a job of a task from SQL (add_job of task code): args as {"args": [...], "kwargs": {...}}; returns the job id (the existing one when identity_key is held by a pending or running job). The job''s language is the caller''s sync.lang (sync.job_lang).';
CREATE OR REPLACE FUNCTION sync_retry_job(job_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    SELECT id, state, trigger_kind, identity_key INTO j
    FROM sync.job WHERE id = sync_retry_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_id
            USING ERRCODE = 'no_data_found', HINT = 'Find failed jobs with: SELECT id, error FROM sync.job WHERE state = ''failed'';';
    END IF;
    IF j.state <> 'failed' THEN
        RAISE EXCEPTION 'job % is %, not failed', job_id, j.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only failed jobs can be retried by hand.';
    END IF;
    IF j.trigger_kind IS NULL OR j.trigger_kind NOT IN ('cron', 'db', 'job') THEN
        RAISE EXCEPTION 'job % was started by a % trigger; only cron, db and add_job jobs can be retried by hand', job_id, coalesce(j.trigger_kind, 'unknown')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE j.trigger_kind WHEN 'button' THEN 'Press the button again: SELECT sync_run_button(project, trigger_name);'
                                            ELSE 'Send the request again.' END;
    END IF;
    BEGIN
        UPDATE sync.job
        SET state = 'pending', eta = sync.clock(), attempts = 0, worker = NULL, error = NULL,
            result = NULL, warning = false, started_at = NULL, finished_at = NULL
        WHERE id = sync_retry_job.job_id;
        DELETE FROM sync.job_interrupted i WHERE i.job_id = sync_retry_job.job_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'job % cannot be retried: another job with identity key "%" is pending or running', job_id, j.identity_key
            USING ERRCODE = 'unique_violation',
                  HINT = 'Wait for that job to finish, or cancel it with sync_cancel_job().';
    END;
    PERFORM pg_notify('sync_job', '');
END
$$;
COMMENT ON FUNCTION sync_retry_job(bigint) IS 'Re-queue a failed cron, db or add_job job by hand (attempts start again from 0).';
CREATE TABLE sync.job_cancel (
    job_id       bigint PRIMARY KEY REFERENCES sync.job ON DELETE CASCADE,
    requested_by name NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sync.job_cancel IS 'Cancel requests for running jobs, consumed by the worker running them.';
COMMENT ON COLUMN sync.job_cancel.job_id IS 'The running job to stop.';
COMMENT ON COLUMN sync.job_cancel.requested_by IS 'Who called sync_cancel_job.';
COMMENT ON COLUMN sync.job_cancel.requested_at IS 'When.';
SELECT pg_catalog.pg_extension_config_dump('sync.job_cancel', '');

CREATE OR REPLACE FUNCTION sync_cancel_job(job_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
    queued boolean;
    who name := sync.caller();
BEGIN
    -- A job being run is claimed: its batch holds the lock of its queue row until it
    -- commits (SKIP LOCKED: waiting for it would make cancelling a stuck job hang).
    PERFORM 1 FROM sync.job_queue q WHERE q.id = sync_cancel_job.job_id FOR UPDATE SKIP LOCKED;
    queued := FOUND;
    IF NOT queued AND EXISTS (SELECT 1 FROM sync.job_queue q WHERE q.id = sync_cancel_job.job_id) THEN
        INSERT INTO sync.job_cancel AS c (job_id, requested_by) VALUES (sync_cancel_job.job_id, who)
        ON CONFLICT ON CONSTRAINT job_cancel_pkey DO NOTHING;
        PERFORM pg_notify('sync_cancel', json_build_object('job', job_id, 'by', who)::text);
        RAISE NOTICE 'job % is running; its worker stops it within a second and records it cancelled', job_id;
        RETURN;
    END IF;
    SELECT state INTO st FROM sync.job WHERE id = sync_cancel_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_id
            USING ERRCODE = 'no_data_found', HINT = 'Find pending jobs with: SELECT id, handler FROM sync.job WHERE state = ''pending'';';
    END IF;
    IF st NOT IN ('pending', 'running') THEN
        RAISE EXCEPTION 'job % is %; only pending and running jobs can be cancelled', job_id, st
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'It is not going to run anyway.';
    END IF;
    IF NOT queued THEN
        RAISE EXCEPTION 'job % was queued again while being cancelled', job_id
            USING ERRCODE = 'serialization_failure', HINT = 'Cancel it again.';
    END IF;
    -- Pending and claimed by no batch (its queue row is locked here): it will not run.
    UPDATE sync.job
    SET state = 'cancelled', finished_at = now(), error = format('cancelled by %s', who)
    WHERE id = sync_cancel_job.job_id;
    DELETE FROM sync.job_cancel c WHERE c.job_id = sync_cancel_job.job_id;
END
$$;
COMMENT ON FUNCTION sync_cancel_job(bigint) IS 'Cancel a job: a pending one will not run; a running one is stopped by its worker within a second and recorded cancelled. Returns at once.';
CREATE OR REPLACE FUNCTION sync.interrupt_job(job_id bigint, worker_id integer, reason text, give_up boolean)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz;
    now_state text;
BEGIN
    DELETE FROM sync.job_started r WHERE r.worker = worker_id AND r.job_id = interrupt_job.job_id
    RETURNING r.started_at INTO started;
    INSERT INTO sync.job_interrupted (job_id, worker, reason, give_up, started_at)
    SELECT j.id, worker_id, reason, give_up, started FROM sync.job j
    WHERE j.id = interrupt_job.job_id AND j.state = 'pending';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM sync.job_queue q WHERE q.id = interrupt_job.job_id FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        PERFORM sync.count_interrupted(ARRAY[interrupt_job.job_id]);
    END IF;
    SELECT j.state INTO now_state FROM sync.job j WHERE j.id = interrupt_job.job_id;
    IF now_state = 'pending' THEN
        PERFORM pg_notify('sync_job', '');
    END IF;
    RETURN now_state;
END
$$;
COMMENT ON FUNCTION sync.interrupt_job(bigint, integer, text, boolean) IS 'Used by workers for a job they had to stop: the try is recorded as cut short (failed when give_up) and counted at once, or by the batch holding the job; returns the job''s state.';
CREATE OR REPLACE FUNCTION sync.log_cleanup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- TG_RELID, not TG_TABLE_NAME: a table named `job` in another schema is not ours.
    IF TG_RELID = 'sync.project'::regclass THEN
        DELETE FROM sync.log l USING deleted_rows d WHERE l.project_id = d.id;
    ELSIF TG_RELID = 'sync.job'::regclass THEN
        -- Planned at each call (EXECUTE): a plan kept from when sync.log was small (a
        -- nested loop over a sequential scan) made each retention batch take a minute.
        EXECUTE 'DELETE FROM sync.log l USING deleted_rows d WHERE l.job_id = d.id';
    ELSIF TG_RELID = 'sync.task'::regclass THEN
        UPDATE sync.log l SET task_id = NULL FROM deleted_rows d WHERE l.task_id = d.id;
    ELSE
        RAISE EXCEPTION 'sync.log_cleanup() only runs as a trigger of sync.project, sync.job or sync.task'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sync.log_cleanup() IS 'ON DELETE actions of sync.log (project, job: delete the lines; task: clear task_id), set-based.';
------------------------------------------------------------------------------------
-- sql/triggers.sql
------------------------------------------------------------------------------------
ALTER TABLE sync.db_trigger_due ADD COLUMN lang text;
COMMENT ON COLUMN sync.db_trigger_due.lang IS 'Language of the session that last set the row''s date (sync.job_lang), the job''s language; NULL (scheduled before pg_sync 0.2): the project''s.';
CREATE OR REPLACE FUNCTION sync.enqueue_timed_triggers() RETURNS integer
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
DROP FUNCTION sync.dbt_schedule(bigint, jsonb[], timestamptz[], name);
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
CREATE OR REPLACE FUNCTION sync.dbt_backfill(dbt_id bigint) RETURNS void
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
CREATE OR REPLACE FUNCTION sync.dbt_on_write() RETURNS trigger
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
------------------------------------------------------------------------------------
-- sql/projects.sql
------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION sync.pio_format() RETURNS TABLE (section text, fields jsonb)
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
CREATE OR REPLACE FUNCTION sync_import_project(doc jsonb, replace boolean DEFAULT false) RETURNS bigint
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
CREATE OR REPLACE FUNCTION sync_export_project(name text) RETURNS jsonb
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
-- sql/executor.sql (new)
------------------------------------------------------------------------------------
------------------------------------------------------------------------------------
-- Limits that hold against the code they limit
------------------------------------------------------------------------------------

-- The ceiling of a task's time_limit (the sync.setting max_time_limit, default 1 hour):
-- a larger one is refused when written and clamped when run.
CREATE FUNCTION sync.max_time_limit() RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT s.value::interval FROM sync.setting s WHERE s.key = 'max_time_limit'),
                    interval '1 hour');
END
$$;
COMMENT ON FUNCTION sync.max_time_limit() IS 'Longest time_limit a task may have: the max_time_limit setting (sync.setting), default 1 hour. Workers clamp every job to it.';

CREATE FUNCTION sync.task_check_time_limit() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ceiling interval := sync.max_time_limit();
BEGIN
    IF NEW.time_limit > ceiling THEN
        RAISE EXCEPTION 'task "%": time_limit % is longer than max_time_limit (%)', NEW.name, NEW.time_limit, ceiling
            USING ERRCODE = 'check_violation',
                  HINT = 'Use a shorter time_limit, or have an admin raise the ceiling: INSERT INTO sync.setting VALUES (''max_time_limit'', ''2 hours'') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER check_time_limit BEFORE INSERT OR UPDATE OF time_limit ON sync.task
    FOR EACH ROW WHEN (NEW.time_limit IS NOT NULL)
    EXECUTE FUNCTION sync.task_check_time_limit();

-- The setting itself must be an interval, or every job would fail to start.
CREATE FUNCTION sync.setting_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.key IN ('keep_done_jobs', 'keep_failed_jobs') THEN
        BEGIN
            IF NEW.value::interval < interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'setting %: "%" is not an interval of 0 or more', NEW.key, NEW.value
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Write it like ''7 days'' or ''12 hours''.';
        END;
    END IF;
    IF NEW.key = 'max_time_limit' THEN
        BEGIN
            IF NEW.value::interval <= interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'setting max_time_limit: "%" is not a positive interval', NEW.value
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Write it like ''1 hour'' or ''90 minutes''.';
        END;
    END IF;
    IF NEW.key = 'cron_missed_runs' AND NEW.value NOT IN ('once', 'skip', 'each') THEN
        RAISE EXCEPTION 'setting cron_missed_runs: "%" is not once, skip or each', NEW.value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'once runs missed cron runs as one job (the default), skip drops them, each runs every one of them up to cron_missed_runs_cap.';
    END IF;
    IF NEW.key = 'cron_missed_runs_cap' AND NOT coalesce(substring(NEW.value FROM '^\s*([0-9]{1,5})\s*$')::integer BETWEEN 1 AND 10000, false) THEN
        RAISE EXCEPTION 'setting cron_missed_runs_cap: "%" is not a whole number from 1 to 10000', NEW.value
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 100.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER check_value BEFORE INSERT OR UPDATE ON sync.setting
    FOR EACH ROW EXECUTE FUNCTION sync.setting_check();

------------------------------------------------------------------------------------
-- Which roles task code may run as
------------------------------------------------------------------------------------

-- Why role `r` must not be a project's run_as, or NULL when it may. The executor login
-- can become any role r is a member of (SET ROLE follows memberships whatever INHERIT
-- says), so every such role is checked, not only r.
CREATE FUNCTION sync.run_as_problem(r name) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
-- plpgsql, not sql: its plan is kept for the session (executors check every batch).
DECLARE
    why_not text;
BEGIN
    WITH RECURSIVE reach(oid) AS (
        SELECT a.oid FROM pg_catalog.pg_roles a WHERE a.rolname = r
        UNION
        SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN reach ON m.member = reach.oid
    ), bad AS (
        SELECT a.rolname,
               CASE
                   WHEN a.rolsuper THEN 'is a superuser'
                   WHEN a.rolcreaterole THEN 'may create and grant roles (CREATEROLE)'
                   WHEN a.rolname IN ('pg_read_server_files', 'pg_write_server_files',
                                      'pg_execute_server_program')
                       THEN 'may read or write the server''s files or run programs on it'
                   WHEN a.rolname IN ('sync_admin', 'sync_worker', 'sync_executor')
                       THEN 'is a pg_sync administration role'
                   WHEN pg_catalog.has_column_privilege(a.oid, 'sync.project_secret'::pg_catalog.regclass, 'value', 'SELECT')
                       THEN 'can read secret values (sync.project_secret.value)'
                   WHEN pg_catalog.has_column_privilege(a.oid, 'sync.project'::pg_catalog.regclass, 'core_code', 'UPDATE')
                     OR pg_catalog.has_column_privilege(a.oid, 'sync.project'::pg_catalog.regclass, 'eval_context', 'UPDATE')
                     OR pg_catalog.has_column_privilege(a.oid, 'sync.project'::pg_catalog.regclass, 'run_as', 'UPDATE')
                       THEN 'can change core_code, eval_context or run_as (admin columns)'
               END AS why
        FROM reach JOIN pg_catalog.pg_roles a ON a.oid = reach.oid
    )
    SELECT CASE
        WHEN r IS NULL THEN NULL
        WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles a WHERE a.rolname = r) THEN 'does not exist'
        ELSE (SELECT CASE WHEN b.rolname = r THEN b.why
                          ELSE pg_catalog.format('is a member of %s, which %s', b.rolname, b.why) END
              FROM bad b WHERE b.why IS NOT NULL
              ORDER BY b.rolname = r DESC, b.rolname LIMIT 1)
    END INTO why_not;
    RETURN why_not;
END
$$;
COMMENT ON FUNCTION sync.run_as_problem(name) IS 'Why a role may not be a project''s run_as (superuser, CREATEROLE, server file access, pg_sync admin roles, secret values or admin columns within reach through its memberships), or NULL when it may.';

-- Make sync_executor a member of every valid run_as role of this database's projects,
-- and revoke every membership that stopped qualifying (say, a role granted superuser
-- rights after it became a run_as). Roles are shared by every database of the cluster,
-- so a valid role no project here uses any more stays: another database may use it.
-- Called by workers at start, before they hand a project to an executor, and every few
-- seconds; returns how many memberships changed.
CREATE FUNCTION sync.executor_sync_roles() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT DISTINCT p.run_as AS role FROM sync.project p
        WHERE p.run_as IS NOT NULL AND sync.run_as_problem(p.run_as) IS NULL
          AND NOT pg_catalog.pg_has_role('sync_executor', p.run_as, 'MEMBER')
        ORDER BY 1
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('GRANT %I TO sync_executor', r.role);
            n := n + 1;
        EXCEPTION WHEN unique_violation OR internal_error OR duplicate_object THEN
            NULL; -- another worker granted it at the same moment
        END;
    END LOOP;
    FOR r IN
        SELECT a.rolname AS role FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles a ON a.oid = m.roleid
        WHERE m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'sync_executor')
          AND sync.run_as_problem(a.rolname) IS NOT NULL
        ORDER BY 1
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('REVOKE %I FROM sync_executor', r.role);
            n := n + 1;
        EXCEPTION WHEN internal_error OR undefined_object THEN
            NULL;
        END;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.executor_sync_roles() IS 'Used by workers: make sync_executor a member of every valid run_as role and revoke roles that stopped qualifying (sync.run_as_problem). Returns the number of changes.';

-- Only a member of a role may have task code run as it: run_as delegates the role's
-- rights, and nobody may delegate rights they do not hold. SECURITY INVOKER, so it sees
-- the writer.
CREATE FUNCTION sync.project_check_run_as() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := sync.run_as_problem(NEW.run_as);
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user, NEW.run_as, 'MEMBER') THEN
        RAISE EXCEPTION 'project "%": permission denied to set run_as to role %', NEW.name, NEW.run_as
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('Only a member of a role may make task code run as it: GRANT %I TO %I;', NEW.run_as, current_user);
    END IF;
    IF problem IS NOT NULL THEN
        -- Not refused (a role can change later anyway; jobs check it when they run),
        -- but said at once.
        RAISE WARNING 'project "%": run_as role % %; its task code will not be able to use the database', NEW.name, NEW.run_as, problem;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER check_run_as BEFORE INSERT OR UPDATE OF run_as ON sync.project
    FOR EACH ROW WHEN (NEW.run_as IS NOT NULL)
    EXECUTE FUNCTION sync.project_check_run_as();

-- Grant a project's run_as to sync_executor as soon as an admin sets it, so that a
-- worker's batch transaction, which may have begun before the worker could grant it,
-- finds the membership (a session sees a new membership only at its next transaction).
CREATE FUNCTION sync.project_grant_run_as() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'sync.project'::regclass THEN
        RAISE EXCEPTION 'sync.project_grant_run_as() only runs as the trigger of sync.project'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    IF NEW.run_as IS NOT NULL AND sync.run_as_problem(NEW.run_as) IS NULL
       AND NOT pg_catalog.pg_has_role('sync_executor', NEW.run_as, 'MEMBER') THEN
        BEGIN
            EXECUTE pg_catalog.format('GRANT %I TO sync_executor', NEW.run_as);
        EXCEPTION WHEN unique_violation OR internal_error OR duplicate_object THEN
            NULL; -- granted at the same moment elsewhere
        END;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER grant_run_as AFTER INSERT OR UPDATE OF run_as ON sync.project
    FOR EACH ROW WHEN (NEW.run_as IS NOT NULL)
    EXECUTE FUNCTION sync.project_grant_run_as();

-- Why the current session may not run task code (a misconfigured executor login), or
-- NULL. Run by every executor on its own connection right after connecting.
CREATE FUNCTION sync.executor_session_problem() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT pg_catalog.pg_has_role(session_user, 'sync_executor', 'MEMBER')
            THEN pg_catalog.format('login %s is not a member of sync_executor', session_user)
        WHEN a.rolsuper THEN pg_catalog.format('login %s is a superuser', session_user)
        WHEN a.rolcreaterole THEN pg_catalog.format('login %s has CREATEROLE', session_user)
        WHEN a.rolname <> 'sync_executor' AND EXISTS (
                 SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                 WHERE m.member = a.oid AND g.rolname <> 'sync_executor')
            THEN pg_catalog.format('login %s is a member of roles besides sync_executor', session_user)
        WHEN pg_catalog.has_column_privilege(session_user, 'sync.project_secret'::pg_catalog.regclass, 'value', 'SELECT')
            THEN pg_catalog.format('login %s can read secret values', session_user)
        WHEN pg_catalog.has_table_privilege(session_user, 'sync.job'::pg_catalog.regclass, 'UPDATE')
          OR pg_catalog.has_table_privilege(session_user, 'sync.project'::pg_catalog.regclass, 'UPDATE')
            THEN pg_catalog.format('login %s can write pg_sync tables directly', session_user)
    END
    FROM pg_catalog.pg_roles a WHERE a.rolname = session_user
$$;
COMMENT ON FUNCTION sync.executor_session_problem() IS 'Why the current login may not run task code (superuser, CREATEROLE, other memberships, secrets or pg_sync tables within reach), or NULL.';

-- The password of sync_executor as this database knows it, set on the role the first
-- time. A role is shared by every database of the cluster: when the role already has a
-- password this database did not set, it is left alone and NULL is returned (the
-- worker then logs in without one, which works where pg_hba trusts local logins, and
-- otherwise says to set executor_database_url).
CREATE TABLE sync.executor_credential (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    password text NOT NULL
);
COMMENT ON TABLE sync.executor_credential IS 'Password pg_sync set on the sync_executor login (readable by its owner only).';
COMMENT ON COLUMN sync.executor_credential.id IS 'Always true: the table has one row.';
COMMENT ON COLUMN sync.executor_credential.password IS 'The password sync.executor_login() set on sync_executor.';
REVOKE ALL ON sync.executor_credential FROM PUBLIC;

CREATE FUNCTION sync.executor_login() RETURNS TABLE (login name, password text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pw text;
    candidate text;
BEGIN
    -- Workers of this database starting together: one sets the password, the others
    -- wait and read it.
    PERFORM pg_catalog.pg_advisory_xact_lock(sync.worker_lock_class(), 0);
    SELECT c.password INTO pw FROM sync.executor_credential c;
    IF pw IS NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid a
                                  WHERE a.rolname = 'sync_executor' AND a.rolpassword IS NOT NULL) THEN
        candidate := pg_catalog.replace(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, '-', '');
        BEGIN
            EXECUTE pg_catalog.format('ALTER ROLE sync_executor LOGIN PASSWORD %L', candidate);
            INSERT INTO sync.executor_credential (password) VALUES (candidate);
            pw := candidate;
        EXCEPTION WHEN internal_error THEN
            -- "tuple concurrently updated": another database set it at this moment.
            pw := NULL;
        END;
    END IF;
    IF NOT (SELECT a.rolcanlogin FROM pg_catalog.pg_roles a WHERE a.rolname = 'sync_executor') THEN
        BEGIN
            ALTER ROLE sync_executor LOGIN;
        EXCEPTION WHEN internal_error THEN
            NULL; -- switched on by another database at this moment
        END;
    END IF;
    RETURN QUERY SELECT 'sync_executor'::name, pw;
END
$$;
COMMENT ON FUNCTION sync.executor_login() IS 'Used by workers that derive the executors'' login from their own URL: enables the sync_executor login and returns its password (NULL when it was set outside this database).';

------------------------------------------------------------------------------------
-- Batches: what an executor session may do, for its worker only
------------------------------------------------------------------------------------

-- Raises unless `token` is the live token of worker `worker_id`. Only the worker's
-- Rust code knows it (sync.worker keeps its hash), so task code that reaches the
-- executor login cannot use the functions below.
CREATE FUNCTION sync.worker_token_check(worker_id integer, token text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF token IS NULL OR NOT EXISTS (
        SELECT 1 FROM sync.worker w
        WHERE w.id = worker_id AND w.stopped_at IS NULL
          AND w.token_hash = pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8'))) THEN
        RAISE EXCEPTION 'not the batch token of a running worker'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'These functions are for sync_worker''s executors only.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION sync.worker_token_check(integer, text) FROM PUBLIC;

-- Lock the claimed jobs `ids` of worker `worker_id` for the batch transaction and say
-- what the executor needs to run them: the task's time_limit and the ceiling every
-- limit is clamped to (sync.max_time_limit()), and cancelled_by when sync_cancel_job
-- asked to stop the job. FOR NO KEY UPDATE, not FOR UPDATE: foreign-key checks of other
-- transactions (child jobs, log lines) need not wait for the batch.
CREATE FUNCTION sync.batch_lock(worker_id integer, token text, ids bigint[], n integer,
                                any_state boolean DEFAULT false)
RETURNS TABLE (id bigint, project_id bigint, project_version bigint, task_id bigint,
               trigger_kind text, trigger_name text, handler text, args jsonb, user_name text,
               lang text, try_no integer, max_retries integer, started_at timestamptz,
               time_limit double precision, project_active boolean, task_active boolean,
               project_name text, task_name text, cancelled_by name, run_as name,
               run_as_problem text, max_time_limit double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan ROWS 100 AS $$
#variable_conflict use_column
DECLARE
    max_limit double precision;
    locked bigint[];
    projects bigint[];
    sorting text;
BEGIN
    -- plpgsql, not sql: its plans are kept for the session (an sql function is planned
    -- at every call). Generic plans: left to choose, PostgreSQL kept planning these
    -- statements afresh for their parameters at every call once sync.job held a few
    -- thousand rows, which made a claim three times slower.
    PERFORM sync.worker_token_check(worker_id, token);
    IF ids IS NULL THEN
        -- Walks job_queue_due in order whatever the statistics say: the plan is kept for
        -- the session, and one made while the queue was nearly empty (a sequential scan
        -- and a sort) cost every later claim the whole queue. So sorts are off while
        -- this statement is planned and run (only this one: the function's SET clause
        -- restores the setting at its exit anyway).
        sorting := pg_catalog.current_setting('enable_sort');
        PERFORM pg_catalog.set_config('enable_sort', 'off', true);
        SELECT pg_catalog.array_agg(c.id), pg_catalog.array_agg(DISTINCT c.project_id)
        INTO locked, projects
        FROM (
            SELECT q.id, q.project_id FROM sync.job_queue q
            WHERE q.eta <= (SELECT sync.clock())
            ORDER BY q.priority, q.eta, q.id
            LIMIT batch_lock.n
            FOR UPDATE SKIP LOCKED
        ) c;
        PERFORM pg_catalog.set_config('enable_sort', sorting, true);
    ELSE
        locked := ARRAY(SELECT q.id FROM sync.job_queue q
                        WHERE q.id = ANY (batch_lock.ids)
                        FOR UPDATE SKIP LOCKED);
        IF batch_lock.any_state THEN
            -- `run-job` of a job that is not pending: its row's lock keeps it from
            -- being queued again (sync_retry_job) while it runs.
            locked := coalesce(locked, '{}') || ARRAY(
                SELECT j.id FROM sync.job j
                WHERE j.id = ANY (batch_lock.ids)
                  AND j.id <> ALL (coalesce(locked, '{}'))
                  AND NOT EXISTS (SELECT 1 FROM sync.job_queue q WHERE q.id = j.id)
                FOR NO KEY UPDATE SKIP LOCKED);
        END IF;
        projects := ARRAY(SELECT DISTINCT j.project_id FROM sync.job j WHERE j.id = ANY (locked));
    END IF;
    IF coalesce(pg_catalog.cardinality(locked), 0) = 0 THEN
        -- Nothing claimed (often: another worker's claim took the new job): no more work.
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM sync.job_interrupted i WHERE i.job_id = ANY (locked)) THEN
        locked := sync.count_interrupted(locked);
    END IF;
    max_limit := pg_catalog.date_part('epoch', sync.max_time_limit());
    -- In the order claimed. Each job's row by primary key; the projects the claim saw
    -- (a superset once count_interrupted has dropped jobs).
    RETURN QUERY
    WITH p AS MATERIALIZED (
        -- run_as is checked now, once per project of the batch: a role can gain rights
        -- at any time.
        SELECT p.id, p.version, p.active, p.name, p.run_as,
               CASE WHEN p.run_as IS NOT NULL THEN sync.run_as_problem(p.run_as) END AS problem
        FROM sync.project p WHERE p.id = ANY (projects)
    )
    SELECT j.id, j.project_id, p.version, j.task_id, j.trigger_kind, j.trigger_name, j.handler,
           j.args, j.user_name::text, j.lang, j.attempts + 1, j.max_retries, now(),
           pg_catalog.date_part('epoch', t.time_limit)::double precision,
           p.active, coalesce(t.active, true), p.name, t.name,
           c.requested_by, p.run_as, p.problem, max_limit
    FROM unnest(locked) WITH ORDINALITY AS u(id, n)
    JOIN sync.job j ON j.id = u.id
    JOIN p ON p.id = j.project_id
    LEFT JOIN sync.task t ON t.id = j.task_id
    LEFT JOIN sync.job_cancel c ON c.job_id = j.id
    ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION sync.batch_lock(integer, text, bigint[], integer, boolean) IS 'Executors: claim (lock for the batch transaction) up to n due pending jobs, or the jobs ids, for their worker (token-checked), and return what running them needs.';

-- Finish a batch: every job's outcome and every log line in one statement. A job still
-- to be retried gets its eta from the database clock and sync.retry_delay.
CREATE FUNCTION sync.batch_finish(
    worker_id integer, token text,
    ids bigint[], states text[], errors text[], results jsonb[], warnings boolean[],
    log_at timestamptz[], log_project bigint[], log_task bigint[], log_trigger text[],
    log_job bigint[], log_job_started timestamptz[], log_level text[], log_kind text[],
    log_recipient text[], log_message text[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n integer;
    hashing text := pg_catalog.current_setting('enable_hashjoin');
    merging text := pg_catalog.current_setting('enable_mergejoin');
BEGIN
    PERFORM sync.worker_token_check(worker_id, token);
    -- Each job's row is found by primary key, one per id: the plan is kept for the
    -- session, and a hash join made while sync.job was small would read the whole
    -- table for every batch once it is large. So hash and merge joins are off for this
    -- statement (nothing it runs, sync.job's triggers included, needs one).
    PERFORM pg_catalog.set_config('enable_hashjoin', 'off', true);
    PERFORM pg_catalog.set_config('enable_mergejoin', 'off', true);
    -- One pass: the update reads each job's tries and limits as it writes the outcome,
    -- and returns what the retry's log line needs.
    WITH done AS (
        UPDATE sync.job j
        SET state = CASE WHEN u.state = 'skipped' THEN 'cancelled'
                         WHEN u.state <> 'retry' THEN u.state
                         WHEN sync.may_try_again(j.attempts + 1, j.max_retries, false) THEN 'pending'
                         ELSE 'failed' END,
            attempts = CASE WHEN u.state = 'skipped' THEN j.attempts ELSE j.attempts + 1 END,
            result = u.result, warning = u.warning, worker = batch_finish.worker_id,
            started_at = CASE WHEN j.state = 'running' THEN j.started_at ELSE now() END,
            error = CASE WHEN u.state = 'retry' AND NOT sync.may_try_again(j.attempts + 1, j.max_retries, false)
                         THEN pg_catalog.format('gave up after %s tries: %s', j.attempts + 1, pg_catalog.rtrim(u.error))
                         ELSE u.error END,
            eta = CASE WHEN u.state = 'retry' AND sync.may_try_again(j.attempts + 1, j.max_retries, false)
                       THEN (SELECT sync.clock()) + sync.retry_delay(j.attempts + 1)
                       ELSE j.eta END,
            finished_at = CASE WHEN u.state = 'retry' AND sync.may_try_again(j.attempts + 1, j.max_retries, false)
                               THEN NULL ELSE pg_catalog.clock_timestamp() END
        FROM unnest(ids, states, errors, results, warnings) AS u(id, state, error, result, warning)
        WHERE j.id = u.id AND (j.state <> 'running' OR j.worker = batch_finish.worker_id)
          AND u.state = ANY ('{done,failed,cancelled,retry,skipped}'::text[])
        RETURNING j.id, j.project_id, j.task_id, j.trigger_name, j.max_retries, j.started_at,
                  j.state, j.attempts AS tries, j.error, u.state = 'retry' AS retryable
    ), handled AS (
        DELETE FROM sync.job_cancel c WHERE c.job_id = ANY (ids)
    ), counted AS (
        -- Interruptions recorded while the batch ran (its worker seemed dead): this try
        -- ended after all.
        DELETE FROM sync.job_interrupted i WHERE i.job_id = ANY (ids)
    ), logged AS (
        -- Runs whether or not it is referenced, like every data-modifying CTE.
        INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at,
                              level, kind, recipient, message)
        SELECT * FROM unnest(log_at, log_project, log_task, log_trigger, log_job, log_job_started,
                             log_level, log_kind, log_recipient, log_message)
        UNION ALL
        SELECT pg_catalog.clock_timestamp(), o.project_id, o.task_id, o.trigger_name, o.id, o.started_at,
               CASE o.state WHEN 'pending' THEN 'warning' ELSE 'error' END, 'message', NULL,
               CASE o.state
                   WHEN 'pending' THEN pg_catalog.format('job will be retried in %s (try %s of %s): %s',
                       sync.delay_text(sync.retry_delay(o.tries)), o.tries,
                       CASE WHEN o.max_retries = 0 THEN 'unlimited' ELSE o.max_retries::text END,
                       pg_catalog.rtrim(o.error))
                   ELSE 'job failed: ' || o.error
               END
        FROM done o WHERE o.retryable
        RETURNING 1
    )
    SELECT count(*)::integer INTO n FROM done;
    PERFORM pg_catalog.set_config('enable_hashjoin', hashing, true);
    PERFORM pg_catalog.set_config('enable_mergejoin', merging, true);
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.batch_finish(integer, text, bigint[], text[], text[], jsonb[], boolean[], timestamptz[], bigint[], bigint[], text[], bigint[], timestamptz[], text[], text[], text[], text[])
    IS 'Executors: record the outcome (done, failed, cancelled, retry, skipped) of a batch''s jobs of their worker and its log lines in one statement (token-checked); returns the number of jobs finished.';

-- A job whose batch could not commit even alone: record the failure on its own.
CREATE FUNCTION sync.batch_fail_job(worker_id integer, token text, job_id bigint, message text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    PERFORM sync.worker_token_check(worker_id, token);
    -- Unless another batch has claimed it meanwhile (then that batch decides).
    PERFORM 1 FROM sync.job_queue q WHERE q.id = batch_fail_job.job_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE sync.job AS x SET state = 'failed', error = message, attempts = x.attempts + 1,
                             worker = batch_fail_job.worker_id, started_at = now(),
                             finished_at = pg_catalog.clock_timestamp()
    WHERE x.id = job_id AND x.state = 'pending'
    RETURNING x.id, x.project_id, x.task_id, x.trigger_name, x.started_at INTO j;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO sync.log (project_id, task_id, trigger_name, job_id, job_started_at, level, message)
    VALUES (j.project_id, j.task_id, j.trigger_name, j.id, j.started_at, 'error', 'job failed: ' || message);
    RETURN true;
END
$$;
COMMENT ON FUNCTION sync.batch_fail_job(integer, text, bigint, text) IS 'Executors: fail one pending job whose batch transaction could not commit, even alone (token-checked).';

-- Log lines of jobs still running, written as they happen by the executor's log
-- connection (outside the batch transaction, so that they show at once and survive the
-- job's rollback or its executor's death). Project, task, trigger and start come from
-- the job's row, never from the caller; lines of jobs that are not running for this
-- worker are dropped. A plain read of sync.job: the batch's row lock does not block it.
CREATE FUNCTION sync.job_log(worker_id integer, token text, log_job bigint[],
    log_job_started timestamptz[], log_at timestamptz[], log_level text[], log_kind text[], log_recipient text[], log_message text[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM sync.worker_token_check(worker_id, token);
    INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at,
                          level, kind, recipient, message)
    SELECT u.at, j.project_id, j.task_id, j.trigger_name, j.id, u.started,
           u.level, u.kind, u.recipient, u.message
    FROM unnest(log_job, log_job_started, log_at, log_level, log_kind, log_recipient, log_message)
         WITH ORDINALITY AS u(job_id, started, at, level, kind, recipient, message, n)
    JOIN sync.job j ON j.id = u.job_id
    WHERE j.state <> 'running' OR j.worker = job_log.worker_id
    -- The lines' ids in the order they were logged, whatever the join's plan.
    ORDER BY u.n;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.job_log(integer, text, bigint[], timestamptz[], timestamptz[], text[], text[], text[], text[]) IS 'Executors: write log lines of jobs their worker is running, as they happen (token-checked); returns the number written.';

-- Jobs queued with add_job by a job that succeeded: project, task, trigger, language and
-- user come from the parent job's row, never from the caller.
CREATE FUNCTION sync.batch_add_jobs(worker_id integer, token text, parent bigint, children jsonb)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM sync.worker_token_check(worker_id, token);
    SELECT count(sync.add_job(j.project_id, j.task_id, c.handler, coalesce(c.args, '{}'), c.priority,
                              coalesce(c.eta, sync.clock() + pg_catalog.make_interval(secs => c.eta_seconds)),
                              c.max_retries, c.description, c.identity_key, j.id, j.user_name, j.lang,
                              'job', NULL, j.trigger_name))::integer INTO n
    FROM sync.job j,
         pg_catalog.jsonb_to_recordset(children) AS c(handler text, args jsonb, priority integer,
             eta timestamptz, eta_seconds double precision, max_retries integer, identity_key text,
             description text)
    WHERE j.id = parent AND (j.state <> 'running' OR j.worker = batch_add_jobs.worker_id);
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.batch_add_jobs(integer, text, bigint, jsonb) IS 'Executors: queue the jobs a running job of their worker added with add_job (token-checked).';

-- Job rows of a batch of webhook calls, running until the batch finishes them: their ids
-- in the order of the calls, with the run_as role of each call's project and why it may
-- not be used (checked once per project of the batch). Project, task and name come from
-- the trigger rows.
CREATE FUNCTION sync.batch_webhook_jobs(worker_id integer, token text, trigger_ids bigint[],
                                        call_args jsonb[], started timestamptz, caller name)
RETURNS TABLE (id bigint, run_as name, run_as_problem text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_ids bigint[];
BEGIN
    PERFORM sync.worker_token_check(worker_id, token);
    new_ids := ARRAY(SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('sync.job', 'id'))
                     FROM pg_catalog.generate_series(1, coalesce(pg_catalog.cardinality(trigger_ids), 0)));
    -- A call has no session of a user: its job is in the project's language.
    INSERT INTO sync.job (id, project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                          args, state, priority, attempts, max_retries, worker, started_at, user_name,
                          lang)
    SELECT new_ids[u.n], w.project_id, w.task_id, 'webhook', w.id, w.name, 'handle_webhook',
           u.a, 'running', 0, 0, 1, batch_webhook_jobs.worker_id, started, caller, p.lang
    FROM unnest(trigger_ids, call_args) WITH ORDINALITY AS u(t, a, n)
    JOIN sync.webhook_trigger w ON w.id = u.t
    JOIN sync.project p ON p.id = w.project_id;
    RETURN QUERY
    WITH p AS MATERIALIZED (
        SELECT p.id, p.run_as, CASE WHEN p.run_as IS NOT NULL THEN sync.run_as_problem(p.run_as) END AS problem
        FROM sync.project p
        WHERE p.id IN (SELECT w.project_id FROM sync.webhook_trigger w WHERE w.id = ANY (trigger_ids))
    )
    -- One row per call, also for a trigger deleted meanwhile (its call has no row).
    SELECT new_ids[u.n], p.run_as, p.problem
    FROM unnest(trigger_ids) WITH ORDINALITY AS u(t, n)
    LEFT JOIN sync.webhook_trigger w ON w.id = u.t
    LEFT JOIN p ON p.id = w.project_id
    ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION sync.batch_webhook_jobs(integer, text, bigint[], jsonb[], timestamptz, name) IS 'Executors: job rows (running) for a batch of webhook calls of their worker (token-checked); returns their ids in call order.';

------------------------------------------------------------------------------------
-- What the supervisor hands an executor about a project
------------------------------------------------------------------------------------

-- Everything a project's code layers need, secrets included, as one JSON document. Read
-- on the supervisor's connection only: executors receive it over their pipe. `mask`
-- lists every value that must never appear in a log line, error or result.
CREATE FUNCTION sync.project_runtime(project_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
      'id', p.id, 'name', p.name, 'version', p.version,
      'core_code', p.core_code, 'common_code', p.common_code,
      'eval_context', pg_catalog.to_jsonb(p.eval_context), 'run_as', p.run_as,
      'run_as_problem', sync.run_as_problem(p.run_as), 'lang', p.lang,
      'params', coalesce((SELECT pg_catalog.jsonb_object_agg(x.key, x.value)
                          FROM sync.project_param x WHERE x.project_id = p.id), '{}'),
      'texts', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(x.key, x.lang, x.value))
                         FROM sync.project_text x WHERE x.project_id = p.id), '[]'),
      'secrets', coalesce((SELECT pg_catalog.jsonb_object_agg(x.key, x.value)
                           FROM sync.project_secret x WHERE x.project_id = p.id), '{}'),
      'tasks', coalesce((SELECT pg_catalog.jsonb_object_agg(x.id::text,
                                  pg_catalog.jsonb_build_object('name', x.name, 'code', x.code))
                         FROM sync.task x WHERE x.project_id = p.id), '{}'),
      'webhooks', coalesce((SELECT pg_catalog.jsonb_object_agg(x.name, x.token)
                            FROM sync.webhook_trigger x WHERE x.project_id = p.id), '{}'),
      'mask', coalesce((SELECT pg_catalog.jsonb_agg(DISTINCT v.value) FROM (
                            SELECT x.value FROM sync.project_secret x WHERE x.project_id = p.id
                            UNION ALL
                            SELECT x.token FROM sync.webhook_trigger x WHERE x.project_id = p.id
                            UNION ALL
                            SELECT x.signing_secret FROM sync.webhook_trigger x WHERE x.project_id = p.id
                        ) v WHERE coalesce(v.value, '') <> ''), '[]'),
      'base_url', (SELECT s.value FROM sync.setting s WHERE s.key = 'base_url'))
    FROM sync.project p
    WHERE p.id = project_id
$$;
COMMENT ON FUNCTION sync.project_runtime(bigint) IS 'Used by workers: a project''s code layers, params, texts, secrets and the values to mask, as sent to executors.';

------------------------------------------------------------------------------------
-- Cron schedules: a cron trigger runs every interval or on a cron expression in an IANA
-- time zone; missed runs follow the cron_missed_runs setting
------------------------------------------------------------------------------------
-- Rust (pg_sync/src/schedule.rs).
CREATE FUNCTION sync."cron_next"(
	"schedule" TEXT, /* & str */
	"timezone" TEXT, /* & str */
	"after" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* Option < TimestampWithTimeZone > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cron_next_wrapper';
CREATE FUNCTION sync."cron_runs_between"(
	"schedule" TEXT, /* & str */
	"timezone" TEXT, /* & str */
	"from" timestamp with time zone, /* TimestampWithTimeZone */
	"upto" timestamp with time zone, /* TimestampWithTimeZone */
	"max" INT /* i32 */
) RETURNS timestamp with time zone[] /* Vec < TimestampWithTimeZone > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cron_runs_between_wrapper';
CREATE FUNCTION sync."cron_schedule_problem"(
	"schedule" TEXT, /* & str */
	"timezone" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cron_schedule_problem_wrapper';
ALTER TABLE sync.cron_trigger ALTER COLUMN "interval" DROP NOT NULL,
    ADD COLUMN schedule text,
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD CONSTRAINT cron_trigger_interval_or_schedule CHECK (("interval" IS NULL) <> (schedule IS NULL));
COMMENT ON TABLE sync.cron_trigger IS 'Runs handle_cron() every interval or on a cron schedule, from next_run_at, calls_left times (-1 = forever).';
COMMENT ON COLUMN sync.cron_trigger."interval" IS 'Time between runs (at least 1 second); NULL when schedule is set.';
COMMENT ON COLUMN sync.cron_trigger.next_run_at IS 'Next run, by the database clock; for a schedule, inserted as its first run at or after the value given.';
COMMENT ON COLUMN sync.cron_trigger.schedule IS 'Cron expression of five fields (minute hour day month weekday) or six (seconds first); NULL when interval is set.';
COMMENT ON COLUMN sync.cron_trigger.timezone IS 'IANA time zone the schedule is read in (e.g. Europe/Berlin); default UTC.';
CREATE FUNCTION sync.cron_trigger_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    IF NEW.schedule IS NULL THEN
        RETURN NEW;
    END IF;
    problem := sync.cron_schedule_problem(NEW.schedule, NEW.timezone);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cron trigger "%": %', NEW.name, problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write five fields (minute hour day-of-month month day-of-week) or six with seconds first, e.g. schedule ''0 2 * * *'' (daily at 02:00) with timezone ''Europe/Berlin'' or ''UTC''.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF isfinite(NEW.next_run_at) THEN
            NEW.next_run_at := sync.cron_next(NEW.schedule, NEW.timezone, NEW.next_run_at - interval '1 microsecond');
        END IF;
    ELSIF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
          AND (NEW.schedule, NEW.timezone) IS DISTINCT FROM (OLD.schedule, OLD.timezone) THEN
        NEW.next_run_at := sync.cron_next(NEW.schedule, NEW.timezone, sync.clock());
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION sync.cron_trigger_check() IS 'Trigger of sync.cron_trigger: refuses a bad schedule or time zone (22023) and puts next_run_at on the schedule when a schedule is inserted or changed.';
CREATE TRIGGER check_schedule BEFORE INSERT OR UPDATE OF schedule, timezone ON sync.cron_trigger
    FOR EACH ROW EXECUTE FUNCTION sync.cron_trigger_check();
CREATE FUNCTION sync.cron_missed_runs() RETURNS TABLE (policy text, cap integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT value FROM sync.setting WHERE key = 'cron_missed_runs'), 'once'),
           coalesce((SELECT btrim(value)::integer FROM sync.setting WHERE key = 'cron_missed_runs_cap'), 100)
$$;
COMMENT ON FUNCTION sync.cron_missed_runs() IS 'The missed-runs policy of cron triggers: cron_missed_runs (once, skip or each; default once) and cron_missed_runs_cap (default 100).';

CREATE OR REPLACE FUNCTION sync.pio_check_document(doc jsonb) RETURNS void
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

------------------------------------------------------------------------------------
-- sql/roles.sql: grants narrowed since 0.1.0, then the file itself (idempotent)
------------------------------------------------------------------------------------
REVOKE INSERT, UPDATE ON sync.job FROM sync_developer;
REVOKE INSERT, UPDATE ON sync.db_trigger FROM sync_developer;
REVOKE EXECUTE ON FUNCTION
    sync.add_job(bigint, bigint, text, jsonb, integer, timestamptz, integer, text, text, bigint, name, text, text, bigint, text)
    FROM sync_developer;
REVOKE EXECUTE ON FUNCTION sync_webhook_url(text, text) FROM sync_user;
-- 0.2.0, queue rules: tries count runs (sync.job_started), one retry rule
-- (sync.may_try_again; max_retries 0 = no limit), retention of finished jobs.
-- Rows of 0.1.0: a running job's try was counted when it was claimed, and
-- max_retries 0 meant no retry (now: no limit), so such jobs keep one try.
UPDATE sync.job SET attempts = attempts - 1 WHERE state = 'running' AND attempts > 0;
UPDATE sync.job SET max_retries = 1 WHERE max_retries = 0;
COMMENT ON COLUMN sync.job.attempts IS 'Tries that ended or were cut short (the try running now is attempts + 1).';
COMMENT ON COLUMN sync.job.max_retries IS 'Tries in all while the job keeps raising RetryableJobError, the first included (queue_job meaning): 5 = now, +5 min, +15 min, +60 min, +3 h. 0 = no limit.';

COMMENT ON COLUMN sync.setting.key IS 'Setting name: base_url, clock_offset (tests only), db_trigger_chunk_size, max_time_limit, keep_done_jobs, keep_failed_jobs, cron_missed_runs, cron_missed_runs_cap.';
-- Retention (sync.remove_expired_jobs) walks finished jobs oldest first.
CREATE INDEX job_finished ON sync.job (finished_at) WHERE state IN ('done', 'failed', 'cancelled');
CREATE FUNCTION sync.may_try_again(tries integer, max_retries integer, crashed boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN max_retries = 0 THEN NOT crashed OR tries < 10
                ELSE tries < max_retries END
$$;
COMMENT ON FUNCTION sync.may_try_again(integer, integer, boolean) IS 'The retry rule: true when a job with this many tries and this max_retries (0 = no limit) may run again; crashed = the try was cut short (at most 10 tries when max_retries is 0).';
CREATE FUNCTION sync.delay_text(d interval) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s >= 7200 AND s % 3600 = 0 THEN (s / 3600)::text || ' h'
                WHEN s % 60 = 0 THEN (s / 60)::text || ' min'
                ELSE s::text || ' s' END
    FROM (SELECT pg_catalog.date_part('epoch', d)::bigint AS s) x
$$;
COMMENT ON FUNCTION sync.delay_text(interval) IS 'A retry delay as log lines write it (5 min, 60 min, 3 h).';
CREATE UNLOGGED TABLE sync.job_started (
    worker     integer NOT NULL,
    job_id     bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker, job_id)
);
COMMENT ON TABLE sync.job_started IS 'Jobs whose handler is running now, per worker (published by each worker''s supervisor about every 100 ms).';
COMMENT ON COLUMN sync.job_started.worker IS 'Worker (sync.worker.id) running the job.';
COMMENT ON COLUMN sync.job_started.job_id IS 'The job whose handler is running.';
COMMENT ON COLUMN sync.job_started.started_at IS 'When the supervisor first saw it running.';
CREATE INDEX job_started_job ON sync.job_started (job_id);
CREATE FUNCTION sync.job_state(state text, job_id bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN state = 'pending'
                     AND EXISTS (SELECT 1 FROM sync.job_started s WHERE s.job_id = job_state.job_id)
                THEN 'running' ELSE state END
$$;
COMMENT ON FUNCTION sync.job_state(text, bigint) IS 'The state of job job_id as people see it: running while its handler runs (its row says pending then), else its state column.';

CREATE TABLE sync.job_interrupted (
    id       bigserial PRIMARY KEY,
    job_id   bigint NOT NULL REFERENCES sync.job ON DELETE CASCADE,
    worker   integer,
    reason   text NOT NULL,
    give_up  boolean NOT NULL DEFAULT false,
    started_at timestamptz,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_interrupted_job ON sync.job_interrupted (job_id);
COMMENT ON TABLE sync.job_interrupted IS 'Tries cut short by a dying executor or worker, not counted yet: the next batch that claims the job counts them.';
COMMENT ON COLUMN sync.job_interrupted.id IS 'Record id.';
COMMENT ON COLUMN sync.job_interrupted.job_id IS 'The job whose try was cut short.';
COMMENT ON COLUMN sync.job_interrupted.worker IS 'Worker (sync.worker.id) that was running it.';
COMMENT ON COLUMN sync.job_interrupted.reason IS 'What cut it short, as the job''s error and log line say it.';
COMMENT ON COLUMN sync.job_interrupted.give_up IS 'Fail the job (the try overran the hard time limit).';
COMMENT ON COLUMN sync.job_interrupted.started_at IS 'When the try started, as its worker published it (sync.job_started); NULL when it was cut short before.';
COMMENT ON COLUMN sync.job_interrupted.at IS 'When it was recorded.';
SELECT pg_catalog.pg_extension_config_dump('sync.job_interrupted', '');

CREATE FUNCTION sync.count_interrupted(locked bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[];
BEGIN
    WITH taken AS (
        DELETE FROM sync.job_interrupted i WHERE i.job_id = ANY (locked)
        RETURNING i.job_id, i.worker, i.reason, i.give_up, i.started_at, i.id
    ), per_job AS (
        -- The last try cut short says why, when it started and on which worker.
        SELECT t.job_id, count(*)::integer AS cut, bool_or(t.give_up) AS give_up,
               (pg_catalog.array_agg(t.reason ORDER BY t.id DESC))[1] AS reason,
               (pg_catalog.array_agg(t.started_at ORDER BY t.id DESC))[1] AS started_at,
               (pg_catalog.array_agg(t.worker ORDER BY t.id DESC))[1] AS worker
        FROM taken t GROUP BY t.job_id
    ), verdict AS (
        SELECT j.id, j.project_id, j.task_id, j.trigger_name, pj.reason, pj.worker,
               coalesce(pj.started_at, j.started_at) AS started_at,
               j.attempts + pj.cut AS tries,
               CASE WHEN c.requested_by IS NOT NULL THEN 'cancelled'
                    WHEN pj.give_up OR NOT sync.may_try_again(j.attempts + pj.cut, j.max_retries, true)
                        THEN 'failed'
                    ELSE 'pending' END AS state,
               c.requested_by
        FROM per_job pj
        JOIN sync.job j ON j.id = pj.job_id
        LEFT JOIN sync.job_cancel c ON c.job_id = j.id
    ), upd AS (
        UPDATE sync.job j
        SET state = v.state, attempts = v.tries, worker = v.worker, started_at = v.started_at,
            error = CASE WHEN v.state = 'cancelled' THEN pg_catalog.format('cancelled by %s: %s', v.requested_by, v.reason)
                         ELSE v.reason END,
            finished_at = CASE WHEN v.state = 'pending' THEN NULL ELSE pg_catalog.clock_timestamp() END
        FROM verdict v WHERE j.id = v.id
        RETURNING j.id, j.state
    ), uncancel AS (
        DELETE FROM sync.job_cancel c WHERE c.job_id IN (SELECT v.id FROM verdict v WHERE v.state = 'cancelled')
    ), logged AS (
        INSERT INTO sync.log (project_id, task_id, trigger_name, job_id, job_started_at, level, message)
        SELECT v.project_id, v.task_id, v.trigger_name, v.id, v.started_at,
               CASE v.state WHEN 'failed' THEN 'error' ELSE 'warning' END,
               CASE v.state
                   WHEN 'cancelled' THEN pg_catalog.format('job cancelled by %s: %s', v.requested_by, v.reason)
                   WHEN 'failed' THEN pg_catalog.format('job failed: %s (try %s)', v.reason, v.tries)
                   ELSE pg_catalog.format('job interrupted: %s (try %s); it will run again', v.reason, v.tries) END
        FROM verdict v
    )
    SELECT pg_catalog.array_agg(u.id) INTO gone FROM upd u WHERE u.state <> 'pending';
    RETURN ARRAY(SELECT l FROM unnest(locked) AS l WHERE l <> ALL (coalesce(gone, '{}')));
END
$$;
COMMENT ON FUNCTION sync.count_interrupted(bigint[]) IS 'Used by sync.batch_lock: count the recorded interruptions of the jobs a batch has just locked; returns the jobs still to run.';


CREATE FUNCTION sync.worker_running(worker_id integer, job_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM sync.job_started r
    WHERE r.worker = worker_id AND r.job_id <> ALL (coalesce(job_ids, '{}'));
    INSERT INTO sync.job_started (worker, job_id)
    SELECT worker_id, u.id FROM unnest(job_ids) AS u(id)
    ON CONFLICT DO NOTHING;
$$;
COMMENT ON FUNCTION sync.worker_running(integer, bigint[]) IS 'Used by workers: publish the jobs whose handlers the worker''s executors are running now.';
CREATE OR REPLACE FUNCTION sync.rescue_jobs() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH gone AS (
        DELETE FROM sync.job_started r
        WHERE r.worker NOT IN (SELECT sync.live_workers())
        RETURNING r.worker, r.job_id, r.started_at
    )
    INSERT INTO sync.job_interrupted (job_id, worker, reason, started_at)
    SELECT g.job_id, g.worker, pg_catalog.format('worker %s stopped while running it', g.worker),
           g.started_at
    FROM gone g JOIN sync.job j ON j.id = g.job_id
    WHERE j.state = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Counted at once for the jobs no batch holds (their dead transactions have ended).
    PERFORM sync.count_interrupted(ARRAY(
        SELECT q.id FROM sync.job_queue q
        WHERE q.id = ANY (ARRAY(SELECT i.job_id FROM sync.job_interrupted i))
        FOR UPDATE OF q SKIP LOCKED));
    IF n > 0 THEN
        PERFORM pg_notify('sync_job', '');
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.rescue_jobs() IS 'Record the tries dead workers were running as cut short (counted at once, or when the job is claimed again); called by every worker every few seconds.';
-- A job's task is checked with its project: deleting a task finds its jobs through
-- job_project_task, and every job's insert and outcome write one index entry less.
ALTER TABLE sync.job DROP CONSTRAINT job_task_id_fkey,
    ADD FOREIGN KEY (task_id, project_id) REFERENCES sync.task (id, project_id) ON DELETE CASCADE;
DROP INDEX sync.job_task;
DROP INDEX sync.job_project_created;
CREATE INDEX job_project_task ON sync.job (project_id, task_id, created_at);
-- 0.2.0, queue storage: the pending jobs are claimed through the narrow sync.job_queue,
-- and a job's outcome is a HOT update of sync.job (no index of it names a column an
-- outcome changes). Rows 0.1.0 left running (claims were committed then; no worker
-- is alive now, sync.refuse_upgrade_with_live_workers saw to it) go back to pending,
-- or fail for webhook calls (a call never runs twice), as 0.1.0's rescue did.
UPDATE sync.job
SET state = CASE WHEN trigger_kind = 'webhook' THEN 'failed' ELSE 'pending' END,
    error = CASE WHEN trigger_kind = 'webhook'
                 THEN pg_catalog.format('worker %s stopped while running this webhook call', worker)
                 ELSE error END,
    finished_at = CASE WHEN trigger_kind = 'webhook' THEN pg_catalog.clock_timestamp() END
WHERE state = 'running';
DROP INDEX sync.job_pending;
DROP INDEX sync.job_running;
DROP INDEX sync.job_identity;
DROP INDEX sync.job_finished;
CREATE INDEX job_created ON sync.job (created_at);
ALTER TABLE sync.job SET (fillfactor = 45);
COMMENT ON TABLE sync.job IS 'Every job: pending, done, failed or cancelled (a running job''s row says pending, see sync.job_state). Workers claim pending jobs through sync.job_queue.';
COMMENT ON COLUMN sync.job.identity_key IS 'While a job with this key is pending or running in the project, no other is created (sync.job_queue.identity_key).';
-- The pending jobs, narrow: what a claim walks and locks. A job has a row here exactly
-- while it is pending (a running job's row says pending too); the statement triggers
-- below keep it so for every write of sync.job, whoever makes it. A claim is the row
-- lock of a job's queue row (sync.batch_lock), held by the batch transaction that runs
-- the job, so whatever changes a pending job locks its queue row first.
CREATE TABLE sync.job_queue (
    id           bigint PRIMARY KEY,
    priority     integer NOT NULL,
    eta          timestamptz NOT NULL,
    project_id   bigint NOT NULL,
    identity_key text
);
-- The claim query walks this index in order.
CREATE INDEX job_queue_due ON sync.job_queue (priority, eta, id);
CREATE UNIQUE INDEX job_identity ON sync.job_queue (project_id, identity_key)
    WHERE identity_key IS NOT NULL;
COMMENT ON TABLE sync.job_queue IS 'The pending jobs of sync.job (running ones included: their rows say pending), kept by its triggers; workers claim a job by locking its row here.';
COMMENT ON COLUMN sync.job_queue.id IS 'The job (sync.job.id).';
COMMENT ON COLUMN sync.job_queue.priority IS 'The job''s priority, 0 first.';
COMMENT ON COLUMN sync.job_queue.eta IS 'Not run before this time (database clock).';
COMMENT ON COLUMN sync.job_queue.project_id IS 'The job''s project.';
COMMENT ON COLUMN sync.job_queue.identity_key IS 'The job''s identity key: unique among the pending and running jobs of a project.';

-- Jobs finished per minute, by state: what the console's overview and the admin API's
-- status show, counted as jobs finish (no index of sync.job may name finished_at or
-- state, so counting them in sync.job would read the whole table). One row per
-- minute, state and writing backend: batches committing at once never wait on each
-- other's row. Rows older than two days are removed by sync.remove_expired_jobs.
CREATE TABLE sync.job_finished_count (
    minute  timestamptz NOT NULL,
    state   text NOT NULL CHECK (state IN ('done', 'failed', 'cancelled')),
    backend integer NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (minute, state, backend)
);
COMMENT ON TABLE sync.job_finished_count IS 'Jobs that reached done, failed or cancelled, per minute of finished_at (kept two days); sum n over backend.';
COMMENT ON COLUMN sync.job_finished_count.minute IS 'The minute (date_trunc) of the jobs'' finished_at.';
COMMENT ON COLUMN sync.job_finished_count.state IS 'done, failed or cancelled.';
COMMENT ON COLUMN sync.job_finished_count.backend IS 'PostgreSQL backend (pid) that wrote the jobs: one row each, so writers never wait on each other.';
COMMENT ON COLUMN sync.job_finished_count.n IS 'How many jobs.';

-- One home for "a pending job has a queue row" (and for counting finished jobs):
-- statement-level, one set-based statement per write of sync.job however many rows it
-- touches. (A webhook call's row,
-- running, needs none: the batch that writes it finishes it before it commits.)
CREATE FUNCTION sync.job_queue_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'sync.job'::regclass THEN
        RAISE EXCEPTION 'sync.job_queue_sync() only runs as a trigger of sync.job'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    -- Queue rows are found by primary key, `id = ANY (ARRAY(...))`: joined to the
    -- transition table, the planner may hash the whole queue table (a sequential scan
    -- per batch finished) when it thinks index probes dear.
    IF TG_OP = 'INSERT' THEN
        -- One statement: a db trigger's capture pays for this on every write it queues.
        WITH queued AS (
            INSERT INTO sync.job_queue (id, priority, eta, project_id, identity_key)
            SELECT n.id, n.priority, n.eta, n.project_id, n.identity_key
            FROM new_rows n WHERE n.state = 'pending'
        )
        INSERT INTO sync.job_finished_count AS c (minute, state, backend, n)
        SELECT pg_catalog.date_trunc('minute', n.finished_at), n.state, pg_catalog.pg_backend_pid(), count(*)
        FROM new_rows n
        WHERE n.state IN ('done', 'failed', 'cancelled') AND n.finished_at IS NOT NULL
        GROUP BY 1, 2
        ON CONFLICT (minute, state, backend) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Jobs finished by this transaction: whatever finishes a job stamps finished_at
        -- with the transaction's time or later; a row that finished before (an edit of
        -- an old job) is not counted again. No old rows to keep: one copy less per job.
        INSERT INTO sync.job_finished_count AS c (minute, state, backend, n)
        SELECT pg_catalog.date_trunc('minute', n.finished_at), n.state, pg_catalog.pg_backend_pid(), count(*)
        FROM new_rows n
        WHERE n.state IN ('done', 'failed', 'cancelled') AND n.finished_at >= now()
        GROUP BY 1, 2
        ON CONFLICT (minute, state, backend) DO UPDATE SET n = c.n + excluded.n;
        DELETE FROM sync.job_queue q
        WHERE q.id = ANY (ARRAY(SELECT n.id FROM new_rows n WHERE n.state <> 'pending'));
        IF EXISTS (SELECT 1 FROM new_rows n WHERE n.state = 'pending') THEN
            -- Retries (a new eta), jobs queued again, edits of pending jobs.
            INSERT INTO sync.job_queue AS q (id, priority, eta, project_id, identity_key)
            SELECT n.id, n.priority, n.eta, n.project_id, n.identity_key
            FROM new_rows n WHERE n.state = 'pending'
            ON CONFLICT (id) DO UPDATE
            SET priority = excluded.priority, eta = excluded.eta,
                project_id = excluded.project_id, identity_key = excluded.identity_key
            WHERE (q.priority, q.eta, q.project_id, q.identity_key)
                  IS DISTINCT FROM (excluded.priority, excluded.eta, excluded.project_id, excluded.identity_key);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM sync.job_queue q
        WHERE q.id = ANY (ARRAY(SELECT o.id FROM old_rows o WHERE o.state = 'pending'));
    ELSE
        TRUNCATE sync.job_queue;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sync.job_queue_sync() IS 'Triggers of sync.job: keep sync.job_queue holding exactly the jobs whose state is pending, and count finished jobs in sync.job_finished_count.';
CREATE TRIGGER job_queue_insert AFTER INSERT ON sync.job
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.job_queue_sync();
CREATE TRIGGER job_queue_update AFTER UPDATE ON sync.job
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.job_queue_sync();
CREATE TRIGGER job_queue_delete AFTER DELETE ON sync.job
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.job_queue_sync();
CREATE TRIGGER job_queue_truncate AFTER TRUNCATE ON sync.job
    FOR EACH STATEMENT EXECUTE FUNCTION sync.job_queue_sync();

INSERT INTO sync.job_queue (id, priority, eta, project_id, identity_key)
SELECT id, priority, eta, project_id, identity_key FROM sync.job WHERE state = 'pending';
INSERT INTO sync.job_finished_count (minute, state, backend, n)
SELECT pg_catalog.date_trunc('minute', finished_at), state, 0, count(*) FROM sync.job
WHERE state IN ('done', 'failed', 'cancelled') AND finished_at > now() - interval '2 days'
GROUP BY 1, 2;
-- A claim is a row lock of its batch now: nothing to give back.
DROP FUNCTION sync.release_jobs(bigint[], integer);
CREATE OR REPLACE FUNCTION sync.webhook_call_failed(call_token text, worker_id integer, reason text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    w record;
    new_id bigint;
BEGIN
    SELECT t.id, t.name, t.task_id, t.project_id INTO w
    FROM sync.webhook_trigger t WHERE t.token = call_token;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                          state, priority, attempts, max_retries, worker, error, started_at,
                          finished_at)
    VALUES (w.project_id, w.task_id, 'webhook', w.id, w.name, 'handle_webhook', 'failed', 0, 1,
            1, worker_id, reason, now(), clock_timestamp())
    RETURNING id INTO new_id;
    INSERT INTO sync.log (project_id, task_id, trigger_name, job_id, job_started_at, level, message)
    VALUES (w.project_id, w.task_id, w.name, new_id, now(), 'error', 'webhook call failed: ' || reason);
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION sync.webhook_call_failed(text, integer, text) IS 'Used by workers: record a webhook call whose executor died before it committed, as a failed job.';
CREATE FUNCTION sync.keep_jobs(state text) RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT s.value::interval FROM sync.setting s
         WHERE s.key = CASE WHEN state = 'done' THEN 'keep_done_jobs' ELSE 'keep_failed_jobs' END),
        CASE WHEN state = 'done' THEN interval '7 days' ELSE interval '30 days' END)
$$;
COMMENT ON FUNCTION sync.keep_jobs(text) IS 'How long finished jobs of this state are kept: settings keep_done_jobs (7 days) and keep_failed_jobs (failed and cancelled, 30 days).';
CREATE FUNCTION sync.remove_expired_jobs(batch integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    n integer;
    now_ timestamptz := sync.clock();
    keep_done interval := sync.keep_jobs('done');
    keep_failed interval := sync.keep_jobs('failed');
BEGIN
    -- SKIP LOCKED: workers calling this at once share the work instead of waiting.
    -- By creation time (index job_created; no index may name finished_at or state, see
    -- sync.job): a job finishes after it is created, so only jobs created before the
    -- cut-off can have expired, and the walk stops there.
    WITH done_jobs AS (
        SELECT x.id FROM sync.job x
        WHERE x.created_at < now_ - keep_done
          AND x.state = 'done' AND x.finished_at < now_ - keep_done
        ORDER BY x.created_at LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), failed_jobs AS (
        SELECT x.id FROM sync.job x
        WHERE x.created_at < now_ - keep_failed
          AND x.state IN ('failed', 'cancelled') AND x.finished_at < now_ - keep_failed
        ORDER BY x.created_at LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM sync.job j
        WHERE j.id IN (SELECT id FROM done_jobs UNION ALL SELECT id FROM failed_jobs)
        RETURNING j.id
    )
    SELECT count(*) INTO n FROM gone;
    -- The console and the admin API show the last day of these counts.
    DELETE FROM sync.job_finished_count c WHERE c.minute < now_ - interval '2 days';
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.remove_expired_jobs(integer) IS 'Used by workers: remove up to batch finished jobs older than their retention (keep_done_jobs, keep_failed_jobs) with their log lines; returns how many.';
-- 0.2.0, derived log lines: a try that ends done writes no start and end lines;
-- sync.log_view derives them from the job. The lines 0.1.0 wrote for done jobs go, or
-- the view would show them twice.
DELETE FROM sync.log l USING sync.job j
WHERE l.job_id = j.id AND j.state = 'done' AND l.id IS NOT NULL
  AND (l.message IN ('job done', 'job done with warnings')
       OR (l.message LIKE 'job started: %' AND l.job_started_at IS NOT DISTINCT FROM j.started_at));
-- The start and end of a try that ends done (and the start of the try running now) are
-- not written to sync.log: they would double the queue's writes per job. They are
-- derived here from the job's own timestamps (id NULL). Every other try's start is
-- written with its outcome.
CREATE OR REPLACE VIEW sync.log_view AS
SELECT l.id, l.created_at, l.project_id, p.name AS project, l.task_id, t.name AS task,
       l.trigger_name, l.job_id, l.job_started_at, sync.job_state(j.state, j.id) AS job_state, l.level, l.kind,
       l.recipient, l.message
FROM sync.log l
LEFT JOIN sync.project p ON p.id = l.project_id
LEFT JOIN sync.task t ON t.id = l.task_id
LEFT JOIN sync.job j ON j.id = l.job_id
UNION ALL
SELECT NULL, e.at, j.project_id, p.name, j.task_id, t.name, j.trigger_name, j.id,
       j.started_at, j.state, e.level, 'message', NULL, e.message
FROM sync.job j
JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
CROSS JOIN LATERAL (
    SELECT j.started_at, 'info',
           pg_catalog.format('job started: %s() of task %s (try %s)', j.handler,
                             coalesce(t.name, '-'),
                             j.attempts)
    UNION ALL
    SELECT j.finished_at, CASE WHEN j.warning THEN 'warning' ELSE 'info' END,
           CASE WHEN j.warning THEN 'job done with warnings' ELSE 'job done' END
) AS e(at, level, message)
WHERE j.state = 'done' AND j.started_at IS NOT NULL
  AND j.trigger_kind IS DISTINCT FROM 'webhook'
UNION ALL
SELECT NULL, s.started_at, j.project_id, p.name, j.task_id, t.name, j.trigger_name, j.id,
       s.started_at, 'running', 'info', 'message', NULL,
       pg_catalog.format('job started: %s() of task %s (try %s)', j.handler,
                         coalesce(t.name, '-'), j.attempts + 1)
FROM sync.job_started s
JOIN sync.job j ON j.id = s.job_id AND j.state = 'pending'
JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id;
COMMENT ON TABLE sync.log IS 'Execution logs: log() calls, transmissions, retries and failures. The start and end of a try that ended done are not stored: read sync.log_view.';
COMMENT ON VIEW sync.log_view IS 'Logs with project, task and job state, for filtering by name; with the start and end lines of tries that ended done (and of running tries), derived from the job (id NULL).';
COMMENT ON COLUMN sync.log_view.id IS 'Log line id; NULL for the lines derived from the job (start and end of a try that ended done, start of a running try).';
-- 0.2.0, docs: the import hint names the docs page of the format.
CREATE OR REPLACE FUNCTION sync.pio_fail(path text, problem text, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invalid project document: % %', path, problem
        USING ERRCODE = 'invalid_parameter_value',
              HINT = coalesce(hint, 'See docs/export-import.md in the pg_sync repository for the format; sync_export_project(name) shows a complete document.');
END
$$;
COMMENT ON FUNCTION sync.pio_fail(text, text, text) IS 'sync_import_project: raise 22023 about the field at path of the document.';
-- Roles are shared by all databases of the cluster: CREATE EXTENSION running at the
-- same time in two databases must not fail on the other's role. Advisory locks are per
-- database, so the shared catalog itself is locked: concurrent installs wait for each
-- other here (until commit) instead of failing with "tuple concurrently updated".
DO $$
DECLARE
    r text;
BEGIN
    LOCK TABLE pg_catalog.pg_authid IN SHARE ROW EXCLUSIVE MODE;
    FOREACH r IN ARRAY ARRAY['sync_user', 'sync_developer', 'sync_admin', 'sync_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN unique_violation OR duplicate_object THEN
                NULL;
            END;
        END IF;
    END LOOP;
    -- NOINHERIT: its memberships (the run_as roles) give it the right to SET ROLE to
    -- them, not their privileges. LOGIN is switched on by sync.executor_login().
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sync_executor') THEN
        BEGIN
            CREATE ROLE sync_executor NOLOGIN NOINHERIT;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sync_executor'
               AND (rolinherit OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)) THEN
        ALTER ROLE sync_executor NOINHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS;
    END IF;
    BEGIN
        IF NOT pg_has_role('sync_developer', 'sync_user', 'MEMBER') THEN
            GRANT sync_user TO sync_developer;
        END IF;
        IF NOT pg_has_role('sync_admin', 'sync_developer', 'MEMBER') THEN
            GRANT sync_developer TO sync_admin;
        END IF;
        IF NOT pg_has_role('sync_worker', 'sync_admin', 'MEMBER') THEN
            GRANT sync_admin TO sync_worker;
        END IF;
        -- Ending an executor's backend when the executor had to be killed.
        IF NOT pg_has_role('sync_worker', 'pg_signal_backend', 'MEMBER') THEN
            GRANT pg_signal_backend TO sync_worker;
        END IF;
    EXCEPTION WHEN unique_violation OR duplicate_object THEN
        NULL;
    END;
END
$$;

------------------------------------------------------------------------------------
-- Functions: nothing for PUBLIC unless listed
------------------------------------------------------------------------------------

-- Maintenance trigger functions write tables users may not write directly.
ALTER FUNCTION sync.trigger_register_name() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION sync.bump_project_version() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Start from nothing: every function of the extension is revoked from PUBLIC, then the
-- ones meant for everybody or for a role are granted below.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_sync'
    LOOP
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- For everybody: pure helpers, the clock, and functions that act as the caller (reading
-- sync.link as the caller, so they need sync_user's SELECT; writing ones are granted to
-- developers below).
GRANT EXECUTE ON FUNCTION sync.clock(), sync.worker_lock_class(), sync.is_lang(text), sync.retry_delay(integer),
    sync.may_try_again(integer, integer, boolean), sync.delay_text(interval),
    sync.max_time_limit(), sync.run_as_problem(name), sync.executor_session_problem(),
    sync.dbt_check_expression(text, text, text), sync.dbt_key_expr(regclass, text),
    sync_search_links(text, regclass), sync_search_links(text, regclass, anycompatiblearray),
    sync_search_links(text, jsonb), sync.search_local_links(text, regclass, text[]),
    sync.refs_filter(text, jsonb), sync_get_link(text, text), sync_get_link(text, jsonb),
    sync.caller(), sync.live_workers(), sync.version(), sync.job_state(text, bigint),
    -- Cron schedules: pure computation, also called by the cron_trigger check as the writer.
    sync.cron_next(text, text, timestamptz), sync.cron_schedule_problem(text, text),
    sync.cron_runs_between(text, text, timestamptz, timestamptz, integer), sync.cron_missed_runs(),
    -- Helpers of export and import, which run as the caller.
    sync.pio_fail(text, text, text), sync.pio_show(jsonb), sync.pio_check_object(jsonb, text, jsonb),
    sync.pio_format(), sync.pio_check_document(jsonb), sync.pio_require(boolean, text),
    sync.pio_may(text, text[], text)
    TO PUBLIC;
-- Installed on linked tables by their owners (sync_set_link, as the owner): it derives
-- the links it deletes from the table it fires on (TG_RELID), nothing else.
GRANT EXECUTE ON FUNCTION sync.link_cleanup() TO PUBLIC;

GRANT USAGE ON SCHEMA sync TO sync_user, sync_executor, sync_worker;

------------------------------------------------------------------------------------
-- sync_user: read everything but secret values, webhook tokens and signing secrets,
-- and the worker's credentials.
------------------------------------------------------------------------------------
GRANT SELECT ON ALL TABLES IN SCHEMA sync TO sync_user;
REVOKE SELECT ON sync.project_secret, sync.webhook_trigger, sync.worker, sync.executor_credential
    FROM sync_user;
GRANT SELECT (id, project_id, key) ON sync.project_secret TO sync_user;
GRANT SELECT (id, task_id, project_id, name, active, content_type) ON sync.webhook_trigger TO sync_user;
GRANT SELECT (id, hostname, pid, version, started_at, last_seen, stopped_at, webhook_listen, admin_listen)
    ON sync.worker TO sync_user;
GRANT EXECUTE ON FUNCTION sync_export_project(text), sync.keep_jobs(text) TO sync_user;

------------------------------------------------------------------------------------
-- sync_developer: projects (not core_code, run_as or eval_context: those decide what
-- code sees secrets and under which role it runs), tasks, triggers (not their installed
-- state, the run_as of cron triggers or webhook signing secrets), params, texts, links;
-- jobs only through functions, which record who called them; never secrets.
------------------------------------------------------------------------------------
GRANT INSERT (name, active, common_code, lang),
      UPDATE (name, active, common_code, lang), DELETE
    ON sync.project TO sync_developer;
GRANT INSERT, UPDATE, DELETE ON sync.project_param, sync.project_text, sync.task,
    sync.button_trigger, sync.link TO sync_developer;
GRANT INSERT (task_id, project_id, name, active, table_name, event, apply_on, before_update,
              watched_columns, date_column, time_offset, chunk_size),
      UPDATE (task_id, project_id, name, active, table_name, event, apply_on, before_update,
              watched_columns, date_column, time_offset, chunk_size), DELETE
    ON sync.db_trigger TO sync_developer;
GRANT INSERT (task_id, project_id, name, active, "interval", schedule, timezone, next_run_at, calls_left),
      UPDATE (task_id, project_id, name, active, "interval", schedule, timezone, next_run_at, calls_left), DELETE
    ON sync.cron_trigger TO sync_developer;
GRANT INSERT (task_id, project_id, name, active, content_type, token),
      UPDATE (task_id, project_id, name, active, content_type, token), DELETE
    ON sync.webhook_trigger TO sync_developer;
-- The URL of a webhook is its credential: developers, who create webhooks, read it.
GRANT SELECT (token) ON sync.webhook_trigger TO sync_developer;

GRANT EXECUTE ON FUNCTION sync_set_link(text, regclass, bigint, text, timestamptz, boolean),
    sync_set_link(text, regclass, text, text, timestamptz, boolean),
    sync_set_link(text, jsonb, timestamptz, boolean),
    sync_update_links(bigint[], timestamptz), sync_unlink(bigint[]),
    sync_add_job(text, text, text, jsonb, integer, timestamptz, integer, text, text),
    sync_run_button(text, text), sync_retry_job(bigint), sync_cancel_job(bigint),
    sync_webhook_url(text, text), sync_import_project(jsonb, boolean),
    sync.dbt_apply(bigint, boolean), sync.dbt_schedule(bigint, jsonb[], timestamptz[]),
    sync.dbt_backfill(bigint)
    TO sync_developer;
-- Invoker's rights: it queues through sync_run_button and reads sync.job as the caller.
GRANT EXECUTE ON PROCEDURE sync_press_button(text, text, jsonb, interval) TO sync_developer;

------------------------------------------------------------------------------------
-- sync_admin: everything, including secrets, core_code, run_as and eval_context; and
-- the queue maintenance functions workers call.
------------------------------------------------------------------------------------
GRANT ALL ON ALL TABLES IN SCHEMA sync TO sync_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA sync TO sync_admin;
-- Only the extension's owner reads the executor login's password.
REVOKE ALL ON sync.executor_credential FROM sync_admin;
GRANT EXECUTE ON FUNCTION
    sync.add_job(bigint, bigint, text, jsonb, integer, timestamptz, integer, text, text, bigint, name, text, text, bigint, text),
    sync.enqueue_due_crons(), sync.enqueue_scheduled(), sync.enqueue_timed_triggers(),
    sync.rescue_jobs(), sync.interrupt_job(bigint, integer, text, boolean),
    sync.worker_running(integer, bigint[]), sync.remove_expired_jobs(integer),
    sync.webhook_call_failed(text, integer, text)
    TO sync_admin;

------------------------------------------------------------------------------------
-- sync_worker: the worker's own login (member of sync_admin, see above) also manages
-- the executor login and reads projects for its executors.
------------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION sync.executor_login(), sync.executor_sync_roles(),
    sync.project_runtime(bigint)
    TO sync_worker;

------------------------------------------------------------------------------------
-- sync_executor: the batch functions (they check the worker's token).
------------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION sync.batch_lock(integer, text, bigint[], integer, boolean),
    sync.batch_finish(integer, text, bigint[], text[], text[], jsonb[], boolean[], timestamptz[], bigint[], bigint[], text[], bigint[], timestamptz[], text[], text[], text[], text[]),
    sync.batch_fail_job(integer, text, bigint, text),
    sync.job_log(integer, text, bigint[], timestamptz[], timestamptz[], text[], text[], text[], text[]),
    sync.batch_add_jobs(integer, text, bigint, jsonb),
    sync.batch_webhook_jobs(integer, text, bigint[], jsonb[], timestamptz, name)
    TO sync_executor;

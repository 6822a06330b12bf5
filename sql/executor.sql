-- The executor session's contract: what sync_worker's executor processes may do on the
-- connection that runs task code, and how that connection is kept from doing more.
--
-- Why a separate login: task code sends arbitrary SQL, and `SET ROLE` inside a session
-- is no boundary (`set_config('role', ...)` inside one statement switches back to the
-- session's login and forth again). So executors log in as sync_executor (or a login of
-- the operator's that is a member of it), which holds no privilege of its own except
-- EXECUTE on the batch functions below. Those check a per-worker token that only the
-- worker's Rust code holds: task code that switches to the login mid-statement can call
-- them, but without the token they refuse. sync_executor is NOINHERIT and a member of
-- every valid run_as role, so a session of it may become a run_as role (SET ROLE) and
-- nothing else; sync.executor_sync_roles() keeps those memberships in step with the
-- projects and drops roles that stopped qualifying (sync.run_as_problem).

------------------------------------------------------------------------------------
-- Limits that hold against the code they limit
------------------------------------------------------------------------------------

-- The ceiling of a task's time_limit (the sync.setting max_time_limit, default 1 hour):
-- a larger one is refused when written and clamped when run.
-- plpgsql for the reason sync.clock is: every claim reads it.
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

-- Settings read by the queue must be well-formed, or every job (or cron run) would fail.
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

-- Claim the jobs of a batch for the executor's transaction and say what running them
-- needs. A claim is the row lock and nothing more: nothing about it is committed before
-- the batch's outcome, so a batch whose executor, worker or connection dies leaves its
-- jobs pending and unlocked, as if never claimed, and a claim costs no write of its own.
--   ids NULL: up to n due pending jobs, highest priority first (SKIP LOCKED: the jobs
--             other batches run are skipped);
--   ids:      those jobs when pending (jobs run again one per transaction), or whatever
--             their state with any_state (`sync_worker run-job`).
-- Tries cut short by a dying executor or worker (sync.job_interrupted) are counted
-- here, under the lock (sync.count_interrupted): a job out of tries is failed and not
-- returned. try_no is the try about to start; started_at is this transaction's start,
-- which sync.batch_finish records; time_limit is the task's, max_time_limit the ceiling
-- every limit is clamped to; cancelled_by when sync_cancel_job asked to stop the job.
-- The lock is on the job's sync.job_queue row, which nothing references: foreign-key
-- checks of other transactions (child jobs) need not wait for the batch.
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

-- Finish a batch: every job's outcome and every log line in one statement. Outcomes:
-- done, failed, cancelled (the try ran), retry (RetryableJobError: pending again after
-- sync.retry_delay, or failed once sync.may_try_again says no; the line saying which is
-- written here) and skipped (cancelled before it ran: no try counted). Every outcome but
-- skipped counts the try that just ended. The jobs are those the batch locked
-- (sync.batch_lock), or its webhook calls' rows (running for this worker); each records
-- the worker and the try's start (this transaction's, as batch_lock said).
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
-- job's rollback or its executor's death). Project, task and trigger come from the
-- job's row, never from the caller; the try's start from the caller (the batch that
-- runs it has not committed it yet); lines of another worker's webhook calls are
-- dropped. A plain read of sync.job: the batch's row lock does not block it.
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

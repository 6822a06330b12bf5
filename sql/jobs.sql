-- Job queue functions: buttons, manual retry/cancel, add_job with identity keys, cron
-- scheduling, and the queue maintenance that sync_worker calls (rescue, interruptions).
--
-- How attempts and max_retries count (same meaning as OCA queue_job and Sync Studio):
--   attempts    = tries that ended or were cut short: counted when a try ends, or, when
--                 the executor or worker running it died (the supervisor publishes what
--                 each executor is running in sync.job_started), by the next batch that
--                 claims the job (sync.job_interrupted). Claiming a job counts nothing: a
--                 worker that dies costs a try only to the jobs it was actually running.
--   max_retries = tries in all while the job keeps raising RetryableJobError, the
--                 first try included. With the default 5 the tries happen at once, then
--                 5 min, 15 min, 60 min and 3 h after each failed try
--                 (sync.retry_delay); the 5th is the last. 0 means no limit.
-- sync.may_try_again is the only place that decides; a job that keeps killing its
-- executor or worker is given up after max_retries tries, or after 10 with max_retries
-- 0 (a crash loop must not block the queue forever).

COMMENT ON COLUMN sync.job.attempts IS 'Tries that ended or were cut short (the try running now is attempts + 1).';
COMMENT ON COLUMN sync.job.max_retries IS 'Tries in all while the job keeps raising RetryableJobError, the first included (queue_job meaning): 5 = now, +5 min, +15 min, +60 min, +3 h. 0 = no limit.';

-- Delay before the next try after `attempts` tries ended with RetryableJobError.
CREATE FUNCTION sync.retry_delay(attempts integer) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN attempts <= 1 THEN interval '5 minutes'
        WHEN attempts = 2 THEN interval '15 minutes'
        WHEN attempts = 3 THEN interval '60 minutes'
        ELSE interval '3 hours'
    END
$$;
COMMENT ON FUNCTION sync.retry_delay(integer) IS 'Delay before the next try of a job after this many tries ended with RetryableJobError: 5 min, 15 min, 60 min, then 3 h.';

-- The retry rule: may a job that has had `tries` tries run once more? `crashed`: the
-- last try was cut short by a dying executor or worker rather than RetryableJobError.
CREATE FUNCTION sync.may_try_again(tries integer, max_retries integer, crashed boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN max_retries = 0 THEN NOT crashed OR tries < 10
                ELSE tries < max_retries END
$$;
COMMENT ON FUNCTION sync.may_try_again(integer, integer, boolean) IS 'The retry rule: true when a job with this many tries and this max_retries (0 = no limit) may run again; crashed = the try was cut short (at most 10 tries when max_retries is 0).';

-- A delay as the log lines write it: 5 min, 60 min, 3 h.
CREATE FUNCTION sync.delay_text(d interval) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s >= 7200 AND s % 3600 = 0 THEN (s / 3600)::text || ' h'
                WHEN s % 60 = 0 THEN (s / 60)::text || ' min'
                ELSE s::text || ' s' END
    FROM (SELECT pg_catalog.date_part('epoch', d)::bigint AS s) x
$$;
COMMENT ON FUNCTION sync.delay_text(interval) IS 'A retry delay as log lines write it (5 min, 60 min, 3 h).';

------------------------------------------------------------------------------------
-- Enqueueing
------------------------------------------------------------------------------------

-- The insert path of add_job (task code) and of anything else that creates jobs: a
-- job with an identity_key that a pending or running job of the project already has
-- creates nothing, and the existing job's id is returned.
CREATE FUNCTION sync.add_job(
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

-- SECURITY DEFINER: pressing a button must not need the right to write sync.job (which
-- would let anyone forge a job's user or state); the job records the caller.
CREATE FUNCTION sync_run_button(project text, trigger_name text) RETURNS bigint
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

-- Queue a job from SQL: what task code's add_job does, for people and applications. The
-- job's user is the caller; nothing else about it (state, worker, tries) can be set.
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

------------------------------------------------------------------------------------
-- Manual retry and cancel
------------------------------------------------------------------------------------

CREATE FUNCTION sync_retry_job(job_id bigint) RETURNS void
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

-- Cancel requests for jobs that a worker is running right now (their row is locked by
-- the worker's batch, so it cannot be updated until the job ends): the worker stops the
-- job (sync_cancel_job notifies it on channel sync_cancel) and records it cancelled.
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

-- SECURITY DEFINER: cancelling must not need the right to write sync.job.
CREATE FUNCTION sync_cancel_job(job_id bigint) RETURNS void
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

------------------------------------------------------------------------------------
-- Scheduling: cron triggers (and the db triggers' timed events when installed)
------------------------------------------------------------------------------------

-- A schedule trigger starts on its schedule: an inserted next_run_at (the default
-- now(), or an imported one) moves to the first run at or after it, and a new schedule
-- or time zone starts over from the first run after the database clock. A next_run_at
-- written later is taken as it is (now() runs the trigger at once); each run moves it
-- back onto the schedule. A bad expression or zone is refused here, naming the trigger.
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

-- What to do with the runs of a cron trigger that came due while no worker ran: the
-- setting cron_missed_runs (once, skip or each) and, for each, cron_missed_runs_cap.
CREATE FUNCTION sync.cron_missed_runs() RETURNS TABLE (policy text, cap integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT value FROM sync.setting WHERE key = 'cron_missed_runs'), 'once'),
           coalesce((SELECT btrim(value)::integer FROM sync.setting WHERE key = 'cron_missed_runs_cap'), 100)
$$;
COMMENT ON FUNCTION sync.cron_missed_runs() IS 'The missed-runs policy of cron triggers: cron_missed_runs (once, skip or each; default once) and cron_missed_runs_cap (default 100).';

-- Enqueue the due runs of cron triggers. The trigger row is locked and its next_run_at
-- moved past the database clock in the same transaction as the inserts, so two workers
-- calling this at once never enqueue the same run twice (the second one skips the
-- locked row, or sees the moved next_run_at). Runs that came due while no worker was up
-- follow sync.cron_missed_runs(): once = one job for all of them; skip = none, except a
-- run due within the last minute (the scheduler's tick, not a missed run); each = one
-- job per run, the latest `cap` of them, each with args {"scheduled_at": ...}.
CREATE FUNCTION sync.enqueue_due_crons() RETURNS integer
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

-- What every worker calls about once a second: due crons, and the timed db-trigger
-- events when that part of pg_sync provides sync.enqueue_timed_triggers().
CREATE FUNCTION sync.enqueue_scheduled() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    m integer;
BEGIN
    n := sync.enqueue_due_crons();
    IF to_regprocedure('sync.enqueue_timed_triggers()') IS NOT NULL THEN
        EXECUTE 'SELECT sync.enqueue_timed_triggers()' INTO m;
        n := n + coalesce(m, 0);
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sync.enqueue_scheduled() IS 'Called by workers every second: sync.enqueue_due_crons() and, when present, sync.enqueue_timed_triggers().';

------------------------------------------------------------------------------------
-- Queue maintenance used by sync_worker
------------------------------------------------------------------------------------

-- Workers alive now: those holding their advisory lock in this database.
CREATE FUNCTION sync.live_workers() RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    SELECT l.objid::bigint::integer
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = sync.worker_lock_class()::oid
      AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
$$;
COMMENT ON FUNCTION sync.live_workers() IS 'Ids of the workers alive now (holding advisory lock (sync.worker_lock_class(), id)).';

-- Every upgrade script calls this first: a worker of the old version could run the
-- queue with functions the script is replacing, halfway through. The script runs in
-- ALTER EXTENSION's transaction, so the error leaves the installation unchanged.
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

CREATE FUNCTION sync.worker_running(worker_id integer, job_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM sync.job_started r
    WHERE r.worker = worker_id AND r.job_id <> ALL (coalesce(job_ids, '{}'));
    INSERT INTO sync.job_started (worker, job_id)
    SELECT worker_id, u.id FROM unnest(job_ids) AS u(id)
    ON CONFLICT DO NOTHING;
$$;
COMMENT ON FUNCTION sync.worker_running(integer, bigint[]) IS 'Used by workers: publish the jobs whose handlers the worker''s executors are running now.';

-- Tries cut short, recorded by the worker whose executor died running them or by the
-- rescue of a dead worker's jobs, and counted by the next batch that claims the job
-- (sync.count_interrupted, under that batch's row lock: the job is pending again the
-- moment the dead transaction ends, and may be claimed before anyone else sees it).
-- give_up: the try overran the hard time limit; the job fails.
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

-- Count the recorded interruptions of the jobs `locked` (rows the calling batch holds):
-- each is a try; a job out of tries (sync.may_try_again, as a crash) or given up is
-- failed, a job sync_cancel_job asked to stop is cancelled, the others will run again.
-- Returns the jobs still to run. Every interruption gets its log line.
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

-- The handlers dead workers were running: their tries were cut short (recorded in
-- sync.job_interrupted, counted at once or by the batch that claims the job next).
-- Their other jobs need nothing: a claim is only a lock, gone with the dead connection.
-- A webhook call's job row only exists once its batch commits, so none is left running.
CREATE FUNCTION sync.rescue_jobs() RETURNS integer
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

-- A job the worker had to stop: its executor overran the hard time limit (give_up) or
-- died while running it. The try is recorded as cut short, and counted at once when no
-- batch holds the job (the dead executor's transaction has ended), else by the batch
-- that holds it. Returns the job's state then; NULL when the job is no longer pending
-- (its batch committed before the executor died).
CREATE FUNCTION sync.interrupt_job(job_id bigint, worker_id integer, reason text, give_up boolean)
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

------------------------------------------------------------------------------------
-- Retention: finished jobs and their log lines are removed in small batches
------------------------------------------------------------------------------------

-- How long finished jobs (and their log lines) are kept, by state: settings
-- keep_done_jobs (default 7 days) and keep_failed_jobs (failed and cancelled, default
-- 30 days). Checked by sync.setting_check when set.
CREATE FUNCTION sync.keep_jobs(state text) RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT s.value::interval FROM sync.setting s
         WHERE s.key = CASE WHEN state = 'done' THEN 'keep_done_jobs' ELSE 'keep_failed_jobs' END),
        CASE WHEN state = 'done' THEN interval '7 days' ELSE interval '30 days' END)
$$;
COMMENT ON FUNCTION sync.keep_jobs(text) IS 'How long finished jobs of this state are kept: settings keep_done_jobs (7 days) and keep_failed_jobs (failed and cancelled, 30 days).';

-- Remove up to `batch` expired finished jobs of each kind (done; failed and cancelled)
-- with their log lines (trigger log_cleanup); returns how many jobs went. Workers call it every rescue
-- round until it returns less than `batch`: many short transactions, never one long
-- DELETE, and the freed space is reused once (auto)vacuum has passed.
-- force_custom_plan: a plan cached while the table was small (a nested loop over a
-- sequential scan of sync.job) turned each call into seconds once it was large.
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

------------------------------------------------------------------------------------
-- sync.log without per-row foreign-key checks
------------------------------------------------------------------------------------
-- Workers write two or more log lines per job, in bulk, in the job's batch transaction.
-- The three foreign keys of sync.log (project, task, job) cost a per-row RI trigger
-- each: measured 24 us of the 33 us of inserting a log row, about a quarter of the
-- database's CPU per job. They only served their ON DELETE actions, which these
-- statement-level triggers keep (one set-based statement per DELETE, not one per row):
-- deleting a project or a job deletes its log lines, deleting a task clears task_id.
DO $$
DECLARE
    fk name;
BEGIN
    FOR fk IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'sync.log'::regclass AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE sync.log DROP CONSTRAINT %I', fk);
    END LOOP;
END
$$;

CREATE FUNCTION sync.log_cleanup() RETURNS trigger
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
CREATE TRIGGER log_cleanup AFTER DELETE ON sync.project
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.log_cleanup();
CREATE TRIGGER log_cleanup AFTER DELETE ON sync.job
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.log_cleanup();
CREATE TRIGGER log_cleanup AFTER DELETE ON sync.task
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION sync.log_cleanup();

-- Roles and grants, loaded last once every object exists; docs/security.md
-- lists what each role may do. Rules kept here, checked by tests/tests/security_grants.rs:
-- - PUBLIC may execute only functions that act as the caller and reveal nothing (the
--   link functions are granted below); every other function is revoked from PUBLIC.
-- - Every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp.
-- - Trigger functions are executable by no one but their owner (CREATE TRIGGER checks
--   EXECUTE; firing does not), except link_cleanup, which table owners install and
--   which only ever touches the links of the table it fires on.
--
-- sync_user reads (no secret values, no webhook tokens) and changes nothing;
-- sync_developer writes projects, tasks, triggers, params, texts, common_code and links
-- and queues jobs through functions; sync_admin does everything; sync_worker is what
-- a worker's own login needs (sync_admin and signalling its executors' backends);
-- sync_executor is what an executor session may do besides becoming a run_as role:
-- run the token-checked batch functions, nothing else.

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

-- Roles and grants (DESIGN.md section 6); loaded last, once every object exists.
-- sync_user reads (no secret values); sync_developer writes projects, tasks, triggers,
-- params, texts and common_code; sync_admin does everything.

-- Roles are shared by all databases of the cluster: CREATE EXTENSION running at the
-- same time in two databases must not fail on the other's role (unique_violation).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['sync_user', 'sync_developer', 'sync_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN unique_violation OR duplicate_object THEN
                NULL;
            END;
        END IF;
    END LOOP;
    BEGIN
        IF NOT pg_has_role('sync_developer', 'sync_user', 'MEMBER') THEN
            GRANT sync_user TO sync_developer;
        END IF;
        IF NOT pg_has_role('sync_admin', 'sync_developer', 'MEMBER') THEN
            GRANT sync_developer TO sync_admin;
        END IF;
    EXCEPTION WHEN unique_violation OR duplicate_object THEN
        NULL;
    END;
END
$$;

-- Maintenance trigger functions write tables users may not write directly.
ALTER FUNCTION sync.trigger_register_name() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION sync.bump_project_version() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

GRANT USAGE ON SCHEMA sync TO sync_user;

-- sync_user: read everything but secret values. Tables added by later files are
-- readable too; a table with secrets revokes SELECT below and grants its other columns.
GRANT SELECT ON ALL TABLES IN SCHEMA sync TO sync_user;
REVOKE SELECT ON sync.project_secret, sync.webhook_trigger FROM sync_user;
GRANT SELECT (id, project_id, key) ON sync.project_secret TO sync_user;
GRANT SELECT (id, task_id, project_id, name, active, content_type, token) ON sync.webhook_trigger TO sync_user;

-- sync_developer: projects (not core_code, run_as or eval_context: those decide what
-- code sees secrets and under which role it runs), tasks, triggers (not the run_as of
-- cron triggers nor webhook signing secrets), params, texts, links; jobs (task code
-- and buttons); never secrets.
GRANT INSERT (name, active, common_code),
      UPDATE (name, active, common_code), DELETE
    ON sync.project TO sync_developer;
GRANT INSERT, UPDATE, DELETE ON sync.project_param, sync.project_text, sync.task,
    sync.db_trigger, sync.button_trigger, sync.link TO sync_developer;
GRANT INSERT (task_id, project_id, name, active, "interval", next_run_at, calls_left),
      UPDATE (task_id, project_id, name, active, "interval", next_run_at, calls_left), DELETE
    ON sync.cron_trigger TO sync_developer;
GRANT INSERT (task_id, project_id, name, active, content_type, token),
      UPDATE (task_id, project_id, name, active, content_type, token), DELETE
    ON sync.webhook_trigger TO sync_developer;
GRANT INSERT, UPDATE ON sync.job TO sync_developer;

-- sync_admin: everything, including secrets, core_code, run_as and eval_context.
GRANT ALL ON ALL TABLES IN SCHEMA sync TO sync_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA sync TO sync_admin;

-- Link functions that write: developers (and admins) only. The others are open to
-- PUBLIC but read sync.link as the caller, so they need sync_user.
REVOKE EXECUTE ON FUNCTION sync_set_link(text, regclass, bigint, text, timestamptz, boolean),
    sync_set_link(text, regclass, text, text, timestamptz, boolean),
    sync_set_link(text, jsonb, timestamptz, boolean),
    sync_update_links(bigint[], timestamptz), sync_unlink(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_set_link(text, regclass, bigint, text, timestamptz, boolean),
    sync_set_link(text, regclass, text, text, timestamptz, boolean),
    sync_set_link(text, jsonb, timestamptz, boolean),
    sync_update_links(bigint[], timestamptz), sync_unlink(bigint[]) TO sync_developer;

-- Job functions (sql/jobs.sql): developers press buttons, retry and cancel jobs, and
-- task code enqueues jobs; the queue maintenance is for workers (owner / sync_admin).
REVOKE EXECUTE ON FUNCTION sync_run_button(text, text), sync_retry_job(bigint),
    sync_cancel_job(bigint),
    sync.add_job(bigint, bigint, text, jsonb, integer, timestamptz, integer, text, text, bigint, name, text, text, bigint, text),
    sync.enqueue_due_crons(), sync.enqueue_scheduled(), sync.rescue_jobs(),
    sync.release_jobs(bigint[], integer), sync.interrupt_job(bigint, integer, text, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_run_button(text, text), sync_retry_job(bigint),
    sync_cancel_job(bigint),
    sync.add_job(bigint, bigint, text, jsonb, integer, timestamptz, integer, text, text, bigint, name, text, text, bigint, text)
    TO sync_developer;
GRANT EXECUTE ON FUNCTION sync.enqueue_due_crons(), sync.enqueue_scheduled(), sync.rescue_jobs(),
    sync.release_jobs(bigint[], integer), sync.interrupt_job(bigint, integer, text, boolean)
    TO sync_admin;

-- DB triggers (sql/triggers.sql). The installer functions are SECURITY DEFINER and act
-- on stored sync.db_trigger rows only; writers of those rows (developers) call them
-- through the maintenance triggers. enqueue_timed_triggers is for workers.
GRANT SELECT ON sync.db_trigger_due TO sync_user;
REVOKE EXECUTE ON FUNCTION sync.dbt_remove(bigint),
    sync.dbt_probe(sync.db_trigger, text, text, text, text, text),
    sync.dbt_install(sync.db_trigger), sync.dbt_apply(bigint, boolean),
    sync.dbt_schedule(bigint, jsonb[], timestamptz[], name), sync.dbt_backfill(bigint),
    sync.dbt_drop_all_triggers(), sync.enqueue_timed_triggers() FROM PUBLIC;
-- Only the installer (superuser) may create triggers calling these: CREATE TRIGGER
-- checks EXECUTE, firing does not. Otherwise anyone could forge jobs for any project
-- with a trigger of their own calling the SECURITY DEFINER statement function.
REVOKE EXECUTE ON FUNCTION sync.dbt_statement_start(), sync.dbt_capture(),
    sync.dbt_statement_end(), sync.dbt_truncated() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync.dbt_apply(bigint, boolean),
    sync.dbt_schedule(bigint, jsonb[], timestamptz[], name), sync.dbt_backfill(bigint)
    TO sync_developer;
GRANT EXECUTE ON FUNCTION sync.enqueue_timed_triggers() TO sync_admin;

-- Webhooks (sql/webhooks.sql): whoever may read tokens may build URLs; recording calls
-- that died is for workers.
REVOKE EXECUTE ON FUNCTION sync_webhook_url(text, text),
    sync.webhook_call_failed(text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_webhook_url(text, text) TO sync_user;
GRANT EXECUTE ON FUNCTION sync.webhook_call_failed(text, integer, text) TO sync_admin;

-- Project export / import (sql/projects.sql), both SECURITY INVOKER: exporting reads
-- what sync_user may read (secret keys, not values); importing writes as the caller,
-- so a developer may import anything but admin-only columns and secrets.
REVOKE EXECUTE ON FUNCTION sync_export_project(text), sync_import_project(jsonb, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_export_project(text) TO sync_user;
GRANT EXECUTE ON FUNCTION sync_import_project(jsonb, boolean) TO sync_developer;

-- db2db demo, local side: the partner table and the run-as role `db2db_runner` of project
-- db2db (db2db.json). Run it in the database where pg_sync is installed, before the import.
--
-- Idempotent. The partner table is shared with the Telegram demo (same definition).
CREATE TABLE IF NOT EXISTS public.partner (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL,
    email text,
    ref   text UNIQUE
);
COMMENT ON TABLE public.partner IS 'Partners of the pg_sync demos (db2db copies them to a second database; Telegram users get ref <user id>@telegram).';

-- Roles are shared by the databases of a cluster: another database may be creating the
-- same one right now.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'db2db_runner') THEN
        BEGIN
            CREATE ROLE db2db_runner NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF NOT pg_has_role('db2db_runner', 'sync_developer', 'MEMBER') THEN
        GRANT sync_developer TO db2db_runner;   -- links and add_job
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE ON public.partner TO db2db_runner;

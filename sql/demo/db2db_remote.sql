-- db2db demo, remote side: the partner table of the second database, the one the
-- POSTGRES_DSN secret of project db2db points at. Idempotent; pg_sync is not needed there.
--
-- updated_at moves on every update (unless the writer sets it): the project's cron pulls
-- the rows whose updated_at is newer than their link's sync_date.
CREATE TABLE IF NOT EXISTS public.partner (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    origin_ref text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN public.partner.origin_ref IS 'Copies made by pg_sync: <ORIGIN param>:<local partner id>; a retried push finds its row again.';

CREATE OR REPLACE FUNCTION public.partner_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER partner_touch BEFORE UPDATE ON public.partner
    FOR EACH ROW EXECUTE FUNCTION public.partner_touch();

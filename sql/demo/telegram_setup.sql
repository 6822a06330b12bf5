-- Telegram demo: the partner and partner_message tables and the run-as role
-- `telegram_runner` of project telegram (telegram.json). Run it in the database where
-- pg_sync is installed, before the import. Idempotent.
--
-- The partner table is shared with the db2db demo (same definition).
CREATE TABLE IF NOT EXISTS public.partner (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL,
    email text,
    ref   text UNIQUE
);
COMMENT ON TABLE public.partner IS 'Partners of the pg_sync demos (db2db copies them to a second database; Telegram users get ref <user id>@telegram).';

CREATE TABLE IF NOT EXISTS public.partner_message (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id          bigint NOT NULL REFERENCES public.partner ON DELETE CASCADE,
    direction           text NOT NULL DEFAULT 'out' CHECK (direction IN ('in', 'out')),
    body                text NOT NULL,
    edited              boolean NOT NULL DEFAULT false,
    telegram_message_id bigint,
    sent_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS partner_message_partner ON public.partner_message (partner_id);
COMMENT ON TABLE public.partner_message IS 'Messages with partners: in = received from Telegram; out = ours (an out message starting with /telegram is sent to the partner''s Telegram chat).';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telegram_runner') THEN
        BEGIN
            CREATE ROLE telegram_runner NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF NOT pg_has_role('telegram_runner', 'sync_developer', 'MEMBER') THEN
        GRANT sync_developer TO telegram_runner;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE ON public.partner, public.partner_message TO telegram_runner;

-- Webhook triggers: the URL of a trigger (sync_webhook_url), and the record of a call
-- whose webhook executor died before its transaction could commit.

CREATE FUNCTION sync_webhook_url(project text, trigger_name text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tok text;
    base text;
BEGIN
    SELECT w.token INTO tok
    FROM sync.webhook_trigger w JOIN sync.project p ON p.id = w.project_id
    WHERE p.name = sync_webhook_url.project AND w.name = sync_webhook_url.trigger_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project "%" has no webhook trigger "%"', project, trigger_name
            USING ERRCODE = 'no_data_found',
                  HINT = 'List them with: SELECT p.name, w.name FROM sync.webhook_trigger w JOIN sync.project p ON p.id = w.project_id;';
    END IF;
    SELECT s.value INTO base FROM sync.setting s WHERE s.key = 'base_url';
    IF coalesce(base, '') = '' THEN
        RAISE EXCEPTION 'base_url is not set, so webhook URLs are unknown'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Start sync_worker with --base-url https://your.host, or: INSERT INTO sync.setting VALUES (''base_url'', ''https://your.host'');';
    END IF;
    RETURN rtrim(base, '/') || '/sync/webhook/' || tok;
END
$$;
COMMENT ON FUNCTION sync_webhook_url(text, text) IS 'Full URL of a webhook trigger: <base_url>/sync/webhook/<token> (webhooks.NAME in task code).';

-- Used by workers when the executor running a webhook call had to be killed (hard time
-- limit) or died: the call's own transaction is gone, so it is recorded afresh.
CREATE FUNCTION sync.webhook_call_failed(call_token text, worker_id integer, reason text)
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

-- GitHub <-> Trello demo: the run-as role `github_trello_runner` of project
-- github_trello (github_trello.json). The project keeps no tables of its own, only links;
-- its role needs sync_developer for them. Run it before the import. Idempotent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'github_trello_runner') THEN
        BEGIN
            CREATE ROLE github_trello_runner NOLOGIN;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF NOT pg_has_role('github_trello_runner', 'sync_developer', 'MEMBER') THEN
        GRANT sync_developer TO github_trello_runner;
    END IF;
END
$$;

// Attacks in SQL by a sync_developer or sync_user login (or any login): installing a
// trigger without the TRIGGER privilege, running an operator as a table's owner,
// attaching pg_sync's trigger functions elsewhere, forging jobs. Plus the catalog rules
// every SECURITY DEFINER function and every grant follow.
use pg_sync_tests::*;

/// A login member of `group` (sync_developer, sync_user, ...).
async fn login(db: &TestDb, name: &str, group: &str) -> Client {
    let admin = db.connect().await;
    let c = db.connect_as(name).await;
    exec(&admin, &format!("GRANT {group} TO {name}")).await;
    c
}

async fn project_with_task(c: &Client) -> i64 {
    exec(
        c,
        "INSERT INTO sync.project (name, active) VALUES ('crm', true);
         INSERT INTO sync.task (project_id, name, code) SELECT id, 'main', 'pass' FROM sync.project;
         INSERT INTO sync.button_trigger (task_id, name) SELECT id, 'press' FROM sync.task;",
    )
    .await;
    scalar(c, "SELECT id FROM sync.task").await
}

#[tokio::test]
async fn broken_reason_is_no_way_around_the_trigger_privilege() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    let task = project_with_task(&admin).await;
    exec(
        &admin,
        "CREATE TABLE payroll (id int PRIMARY KEY, salary int);
         CREATE TABLE mine (id int PRIMARY KEY, x int);
         GRANT TRIGGER ON mine TO sync_developer;",
    )
    .await;
    let dev = login(&db, "dev_broken", "sync_developer").await;
    // The reproduction: insert it broken (no check), then clear broken_reason.
    let insert = format!(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, broken_reason)
         VALUES ({task}, 'spy', 'payroll', 'delete', 'x')"
    );
    expect_error(&dev, &insert, "42501").await;
    expect_error(
        &dev,
        "UPDATE sync.db_trigger SET broken_reason = NULL",
        "42501",
    )
    .await;
    // Without broken_reason: refused by the privilege check.
    let msg = expect_error(
        &dev,
        &format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({task}, 'spy', 'payroll', 'delete')"),
        "42501",
    )
    .await;
    assert!(msg.contains("permission denied to watch table"), "{msg}");
    // An admin left a broken trigger on payroll (say, its table came back): switching it
    // on installs it, which takes the privilege too.
    exec(
        &admin,
        &format!(
            "INSERT INTO sync.db_trigger (task_id, name, table_name, event, active) VALUES ({task}, 'admins', 'payroll', 'delete', false);
             UPDATE sync.db_trigger SET broken_reason = 'its table was dropped' WHERE name = 'admins';"
        ),
    )
    .await;
    expect_error(
        &dev,
        "UPDATE sync.db_trigger SET active = true WHERE name = 'admins'",
        "42501",
    )
    .await;
    let installed: i64 = scalar(
        &admin,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'payroll'::regclass AND NOT tgisinternal",
    )
    .await;
    assert_eq!(installed, 0, "a trigger got installed on payroll");
    // On a table the developer may trigger on, everything works.
    exec(
        &dev,
        &format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({task}, 'ok', 'mine', 'create')"),
    )
    .await;
}

#[tokio::test]
async fn set_link_runs_no_operator_of_the_caller_as_the_table_owner() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    exec(
        &admin,
        "CREATE TABLE owned (id int PRIMARY KEY);
         INSERT INTO owned VALUES (1);
         GRANT SELECT ON owned TO sync_developer;
         CREATE SCHEMA evil;",
    )
    .await;
    let dev = login(&db, "dev_evil", "sync_developer").await;
    exec(&admin, "GRANT CREATE, USAGE ON SCHEMA evil TO dev_evil").await;
    exec(
        &dev,
        "CREATE FUNCTION evil.eq(a int, b int) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             EXECUTE 'ALTER ROLE dev_evil SUPERUSER';
             RETURN a OPERATOR(pg_catalog.=) b;
         END $$;
         CREATE OPERATOR evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = evil.eq);
         SET search_path = evil, pg_catalog, public;",
    )
    .await;
    // The link is made (the row exists), and the operator never ran as the owner.
    let _ = dev
        .batch_execute("SELECT sync_set_link('r', 'public.owned'::regclass, 1, 'X')")
        .await;
    let sup: bool = scalar(
        &admin,
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'dev_evil'",
    )
    .await;
    assert!(
        !sup,
        "the caller's operator ran with the table owner's rights"
    );
    let links: i64 = scalar(
        &admin,
        "SELECT count(*) FROM sync.link WHERE relation = 'r'",
    )
    .await;
    assert_eq!(links, 1);
}

#[tokio::test]
async fn pg_sync_trigger_functions_cannot_be_attached_elsewhere() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    let task = project_with_task(&admin).await;
    exec(
        &admin,
        &format!(
            "INSERT INTO sync.job (project_id, task_id, handler) SELECT project_id, id, 'x' FROM sync.task;
             INSERT INTO sync.log (project_id, task_id, job_id, message)
                 SELECT project_id, task_id, id, 'audit' FROM sync.job WHERE task_id = {task};"
        ),
    )
    .await;
    let user = login(&db, "reader", "sync_user").await;
    // The reproduction: a temp table named like ours, with our SECURITY DEFINER function.
    exec(&user, "CREATE TEMP TABLE job (id bigint)").await;
    for f in [
        "sync.log_cleanup()",
        "sync.notify_new_jobs()",
        "sync.trigger_register_name('cron')",
        "sync.bump_project_version()",
        "sync.dbt_statement_end('1', 'e', '1', '1', 'x', '1000')",
        "sync.dbt_truncated('1')",
        "sync.dbt_on_write()",
    ] {
        let sql = format!(
            "CREATE TRIGGER t AFTER DELETE ON pg_temp.job REFERENCING OLD TABLE AS deleted_rows
             FOR EACH STATEMENT EXECUTE FUNCTION {f}"
        );
        expect_error(&user, &sql, "42501").await;
    }
    // Even attached by someone who may (the superuser), they refuse a foreign table.
    exec(
        &admin,
        "CREATE TABLE public.job (id bigint);
         CREATE TRIGGER t AFTER DELETE ON public.job REFERENCING OLD TABLE AS deleted_rows
             FOR EACH STATEMENT EXECUTE FUNCTION sync.log_cleanup();
         INSERT INTO public.job SELECT id FROM sync.job;",
    )
    .await;
    expect_error(&admin, "DELETE FROM public.job", "39P01").await;
    let kept: i64 = scalar(
        &admin,
        "SELECT count(*) FROM sync.log WHERE message = 'audit'",
    )
    .await;
    assert_eq!(kept, 1, "audit log lines were deleted");
}

#[tokio::test]
async fn jobs_are_queued_through_functions_that_record_the_caller() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    let task = project_with_task(&admin).await;
    let dev = login(&db, "dev_jobs", "sync_developer").await;
    for sql in [
        format!("INSERT INTO sync.job (project_id, task_id, handler) SELECT project_id, id, 'x' FROM sync.task WHERE id = {task}"),
        format!("INSERT INTO sync.job (project_id, task_id, handler, user_name, state, worker) SELECT project_id, id, 'x', 'postgres', 'done', 1 FROM sync.task WHERE id = {task}"),
        "UPDATE sync.job SET user_name = 'postgres'".to_string(),
        "SELECT sync.add_job(1, 1, 'x', '{}', 10, NULL, 5, NULL, NULL, NULL, 'postgres', NULL, 'job', NULL, NULL)".to_string(),
        "SELECT sync.dbt_schedule(1, ARRAY['1'::jsonb], ARRAY[now()], 'postgres')".to_string(),
    ] {
        let e = dev.batch_execute(&sql).await.expect_err(&sql);
        let code = sqlstate(&e).0;
        assert!(code == "42501" || code == "42883", "{sql}: {e:?}");
    }
    let queued: i64 = scalar(
        &dev,
        "SELECT sync_add_job('crm', 'main', 'work', '{\"args\": [1]}')",
    )
    .await;
    let pressed: i64 = scalar(&dev, "SELECT sync_run_button('crm', 'press')").await;
    // SET ROLE inside the session: the caller is the role it set, not the functions' owner.
    // Roles are cluster-wide: an earlier run on this cluster may have made it.
    exec(
        &admin,
        "DO $$ BEGIN CREATE ROLE helper_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                  GRANT helper_role TO dev_jobs; GRANT sync_developer TO helper_role",
    )
    .await;
    exec(&dev, "SET ROLE helper_role").await;
    let as_helper: i64 = scalar(&dev, "SELECT sync_add_job('crm', 'main', 'work')").await;
    let users: Vec<String> = admin
        .query(
            "SELECT user_name::text FROM sync.job WHERE id = ANY ($1) ORDER BY id",
            &[&vec![queued, pressed, as_helper]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, vec!["dev_jobs", "dev_jobs", "helper_role"]);
    let msg = expect_error(&dev, "SELECT sync_add_job('crm', 'nope', 'work')", "P0002").await;
    assert!(msg.contains("no task"), "{msg}");
    // A sync_user queues nothing.
    let user = login(&db, "reader_jobs", "sync_user").await;
    for sql in [
        "SELECT sync_add_job('crm', 'main', 'work')",
        "SELECT sync_run_button('crm', 'press')",
        "SELECT sync_cancel_job(1)",
        "SELECT sync_retry_job(1)",
    ] {
        expect_error(&user, sql, "42501").await;
    }
}

#[tokio::test]
async fn time_limits_have_a_ceiling() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    let task = project_with_task(&admin).await;
    let dev = login(&db, "dev_limit", "sync_developer").await;
    let msg = expect_error(
        &dev,
        &format!("UPDATE sync.task SET time_limit = '100 years' WHERE id = {task}"),
        "23514",
    )
    .await;
    assert!(msg.contains("max_time_limit"), "{msg}");
    exec(
        &dev,
        &format!("UPDATE sync.task SET time_limit = '59 minutes' WHERE id = {task}"),
    )
    .await;
    // Only admins move the ceiling, and only to an interval.
    expect_error(
        &dev,
        "INSERT INTO sync.setting VALUES ('max_time_limit', '100 years')",
        "42501",
    )
    .await;
    expect_error(
        &admin,
        "INSERT INTO sync.setting VALUES ('max_time_limit', 'forever')",
        "22023",
    )
    .await;
}

/// The rules sql/roles.sql states, checked on the catalog: every SECURITY DEFINER
/// function pins its search_path, and PUBLIC may execute only the listed functions.
#[tokio::test]
async fn security_definer_functions_and_public_grants_follow_the_rules() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let functions =
        "FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                     JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_sync'";
    let unpinned: Vec<String> = c
        .query(
            &format!(
                "SELECT p.oid::regprocedure::text {functions}
                 WHERE p.prosecdef AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
                 ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER without a pinned search_path: {unpinned:?}"
    );
    let public: Vec<String> = c
        .query(
            &format!(
                "SELECT p.oid::regprocedure::text {functions}
                 WHERE has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let allowed = [
        "sync.caller()",
        "sync.clock()",
        "sync.cron_missed_runs()",
        "sync.cron_next(text,text,timestamp with time zone)",
        "sync.cron_runs_between(text,text,timestamp with time zone,timestamp with time zone,integer)",
        "sync.cron_schedule_problem(text,text)",
        "sync.dbt_check_expression(text,text,text)",
        "sync.delay_text(interval)",
        "sync.dbt_key_expr(regclass,text)",
        "sync.executor_session_problem()",
        // A pure test of a text (the CHECK of sync.project.lang runs it as the writer).
        "sync.is_lang(text)",
        // Reads sync.job_started with the caller's rights (sync.log_view uses it).
        "sync.job_state(text,bigint)",
        "sync.link_cleanup()",
        "sync.live_workers()",
        "sync.max_time_limit()",
        "sync.may_try_again(integer,integer,boolean)",
        "sync.pio_check_document(jsonb)",
        "sync.pio_check_object(jsonb,text,jsonb)",
        "sync.pio_fail(text,text,text)",
        "sync.pio_format()",
        "sync.pio_may(text,text[],text)",
        "sync.pio_require(boolean,text)",
        "sync.pio_show(jsonb)",
        "sync.refs_filter(text,jsonb)",
        "sync.retry_delay(integer)",
        "sync.run_as_problem(name)",
        "sync.version()",
        "sync.search_local_links(text,regclass,text[])",
        "sync.worker_lock_class()",
        "sync_get_link(text,jsonb)",
        "sync_get_link(text,text)",
        "sync_search_links(text,jsonb)",
        "sync_search_links(text,regclass)",
        "sync_search_links(text,regclass,anycompatiblearray)",
    ];
    let unexpected: Vec<&String> = public
        .iter()
        .filter(|f| !allowed.contains(&f.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "executable by PUBLIC: {unexpected:?}"
    );
    // Security definer functions are executable by PUBLIC only when listed above
    // (link_cleanup: table owners install it; it touches only its own table's links).
    let sd_public: Vec<String> = c
        .query(
            &format!(
                "SELECT p.oid::regprocedure::text {functions}
                 WHERE p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sd_public, vec!["sync.link_cleanup()"]);
    // The executor role holds nothing but the batch functions and its schema.
    let tables: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'sync'::regnamespace
           AND (has_table_privilege('sync_executor', c.oid, 'SELECT')
             OR has_table_privilege('sync_executor', c.oid, 'INSERT')
             OR has_table_privilege('sync_executor', c.oid, 'UPDATE')
             OR has_table_privilege('sync_executor', c.oid, 'DELETE'))",
    )
    .await;
    assert_eq!(tables, 0);
    let inherit: bool = scalar(
        &c,
        "SELECT rolinherit FROM pg_roles WHERE rolname = 'sync_executor'",
    )
    .await;
    assert!(
        !inherit,
        "sync_executor must not inherit its run_as roles' rights"
    );
}

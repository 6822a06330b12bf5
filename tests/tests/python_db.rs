// SQL from task code, through real worker processes: db.execute/query/query_one, value
// conversion both ways, the run_as role and the job savepoint, env[table] records, and
// the records handle_db receives.
use pg_sync_tests::python::PyProject;
use serde_json::{json, Value};

#[tokio::test]
async fn db_execute_query_and_rows() {
    let p = PyProject::new("db").await;
    p.sql("CREATE TABLE item (id serial PRIMARY KEY, name text, qty int)")
        .await;
    let code = r#"
def handle_cron():
    n = db.execute("INSERT INTO item (name, qty) VALUES ($1, $2), ($3, $4)", 'a', 1, 'b', 2)
    rows = db.query("SELECT id, name, qty FROM item WHERE qty >= $1 ORDER BY id", 1)
    one = db.query_one("SELECT name, qty FROM item WHERE name = $1", 'b')
    none = db.query_one("SELECT name FROM item WHERE name = $1", 'zzz')
    first = rows[0]
    return {
        'inserted': n,
        'count': len(rows),
        'by_attr': first.name,
        'by_key': first['qty'],
        'by_index': first[1],
        'keys': first.keys(),
        'dict': dict(one),
        'get': [one.get('qty'), one.get('nope', 'd')],
        'unpack': list(one),
        'none': none,
        'updated': db.execute("UPDATE item SET qty = qty + 1"),
    }
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "inserted": 2, "count": 2, "by_attr": "a", "by_key": 1, "by_index": "a",
            "keys": ["id", "name", "qty"], "dict": {"name": "b", "qty": 2},
            "get": [2, "d"], "unpack": ["b", 2], "none": null, "updated": 2,
        })
    );
    let err = p
        .error(
            "def handle_cron():\n    return db.query_one('SELECT 1 AS x').nope\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("no column 'nope'"), "{err}");
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT $1::int', 1, 2)\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("1 placeholder(s) but 2 argument(s)"), "{err}");
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELEC 1')\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("DatabaseError") && err.contains("syntax error"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_values_arrive_as_python_types() {
    let p = PyProject::new("db").await;
    let code = r#"
def handle_cron():
    r = db.query_one("""SELECT 1::int2 a, 2::int4 b, 3::int8 c, 1.5::float4 d, 2.25::float8 e,
        1.10::numeric f, 'x'::text g, true h, '{"a": [1, null]}'::jsonb i, '{"b": 2}'::json j,
        '2024-01-02 03:04:05.123456+00'::timestamptz k, '2024-01-02 03:04:05'::timestamp l,
        '2024-01-02'::date m, '03:04:05'::time n, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid o,
        decode('0102', 'hex') p, ARRAY[1, 2] q, ARRAY['a', NULL] r, NULL::text s,
        '1 day 2 hours'::interval t, '1 month 1 day'::interval u, 'v'::varchar v, 'w'::name w,
        'c'::char(2) x, -12345678901234567890.5::numeric y, 'NaN'::numeric z""")
    return {k: [type2str(v).split("'")[1], v if isinstance(v, (int, str, bool, dict, list)) or v is None else str(v)]
            for k, v in zip(r.keys(), r)}
"#;
    let result = p.result(code, "handle_cron").await;
    let expect = json!({
        "a": ["int", 1], "b": ["int", 2], "c": ["int", 3], "d": ["float", "1.5"],
        "e": ["float", "2.25"], "f": ["decimal.Decimal", "1.10"], "g": ["str", "x"],
        "h": ["bool", true], "i": ["dict", {"a": [1, null]}], "j": ["dict", {"b": 2}],
        "k": ["datetime.datetime", "2024-01-02 03:04:05.123456+00:00"],
        "l": ["datetime.datetime", "2024-01-02 03:04:05"], "m": ["datetime.date", "2024-01-02"],
        "n": ["datetime.time", "03:04:05"],
        "o": ["uuid.UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        "p": ["bytes", "b'\\x01\\x02'"], "q": ["list", [1, 2]], "r": ["list", ["a", null]],
        "s": ["NoneType", null], "t": ["datetime.timedelta", "1 day, 2:00:00"],
        "u": ["dateutil.relativedelta.relativedelta", "relativedelta(months=+1, days=+1)"],
        "v": ["str", "v"], "w": ["str", "w"], "x": ["str", "c "],
        "y": ["decimal.Decimal", "-12345678901234567890.5"], "z": ["decimal.Decimal", "NaN"],
    });
    assert_eq!(result, expect);
    let err = p
        .error(
            "def handle_cron():\n    return db.query_one(\"SELECT '127.0.0.1'::inet AS addr\")\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("column \"addr\"") && err.contains("col::text"),
        "{err}"
    );
}

#[tokio::test]
async fn python_values_bind_to_parameters() {
    let p = PyProject::new("db").await;
    let code = r#"
def handle_cron():
    src = db.query_one("SELECT 12.50::numeric AS dec, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u")
    r = db.query_one("""SELECT $1::int::text a, $2::numeric::text b, $3::timestamptz::text c,
        $4::date::text d, $5::uuid::text e, encode($6::bytea, 'hex') f, $7::jsonb::text g,
        $8::int[]::text h, ($9::text IS NULL)::text i, $10::boolean::text j, $11::float8::text k,
        $12::interval::text l, $13::timestamp::text m, $14::jsonb::text n, $15::text[]::text o,
        $16::int8::text p, $17::numeric::text q, $18::uuid::text r, $19::date::text s,
        $20::jsonb::text t, $21::numeric::text u, $22::timestamptz::text v""",
        5, src.dec, datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        datetime.date(2024, 1, 2), src.u, b'\x01\xff', {'k': [1, 'x', None]},
        [1, 2, 3], None, False, 0.5, datetime.timedelta(days=1, seconds=90),
        datetime.datetime(2024, 1, 2, 3, 4, 5), '{"raw": true}', ['a', 'b c'],
        2 ** 40, 10 ** 30, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-03',
        [1, {'a': 2}], 7, timezone('Europe/Paris').localize(datetime.datetime(2024, 7, 1, 12, 0)))
    return dict(r)
"#;
    p.sql("SET timezone = 'UTC'").await;
    p.sql(&format!(
        "ALTER DATABASE {} SET timezone = 'UTC'",
        p.db.name
    ))
    .await;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "a": "5", "b": "12.50", "c": "2024-01-02 03:04:05+00", "d": "2024-01-02",
            "e": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f": "01ff",
            "g": "{\"k\": [1, \"x\", null]}", "h": "{1,2,3}", "i": "true", "j": "false",
            "k": "0.5", "l": "1 day 00:01:30", "m": "2024-01-02 03:04:05",
            "n": "{\"raw\": true}", "o": "{a,\"b c\"}", "p": "1099511627776",
            "q": "1000000000000000000000000000000",
            "r": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "s": "2024-02-03",
            "t": "[1, {\"a\": 2}]", "u": "7", "v": "2024-07-01 10:00:00+00",
        })
    );
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT $1::int', 'abc')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("is not an integer"), "{err}");
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT $1::inet', '127.0.0.1')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("$1::text::inet"), "{err}");
}

#[tokio::test]
async fn task_sql_runs_as_the_run_as_role() {
    let p = PyProject::new("db").await;
    let result = p
        .result(
            "def handle_cron():\n    return db.query_one('SELECT current_user AS u, session_user AS s').u\n",
            "handle_cron",
        )
        .await;
    assert_eq!(result, json!(p.role));
    // Without DB access, a job needs no run_as role at all.
    p.sql(&format!(
        "UPDATE sync.project SET run_as = NULL WHERE id = {}",
        p.id
    ))
    .await;
    let ok = p
        .result("def handle_cron():\n    return 'no sql'\n", "handle_cron")
        .await;
    assert_eq!(ok, json!("no sql"));
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT 1')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("has no run_as role"), "{err}");
    // A superuser, or a role that can read secret values, is refused.
    p.sql(&format!(
        "UPDATE sync.project SET run_as = 'postgres' WHERE id = {}",
        p.id
    ))
    .await;
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT 1')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("is a superuser"), "{err}");
    p.sql(&format!(
        "GRANT SELECT ON sync.project_secret TO {role}; UPDATE sync.project SET run_as = '{role}' WHERE id = {id}",
        role = p.role,
        id = p.id
    ))
    .await;
    let err = p
        .error(
            "def handle_cron():\n    db.query('SELECT 1')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("can read secret values"), "{err}");
}

#[tokio::test]
async fn settings_changed_by_a_job_do_not_reach_the_next_job() {
    let p = PyProject::new("db").await;
    let setter = p
        .task(
            "setter",
            "def handle_cron():\n    db.execute(\"SET LOCAL statement_timeout = '4321ms'\")\n    db.execute('SET search_path = pg_catalog')\n    return db.query_one(\"SELECT current_setting('statement_timeout') AS t\").t\n",
        )
        .await;
    let reader = p
        .task(
            "reader",
            "def handle_cron():\n    return db.query_one(\"SELECT current_setting('statement_timeout') AS t, current_setting('search_path') AS p, current_user AS u\")\n",
        )
        .await;
    // Queued before the worker starts: both run in one batch transaction.
    let a = p.job(setter, "handle_cron", Value::Null).await;
    let b = p.job(reader, "handle_cron", Value::Null).await;
    assert_eq!(p.run(a).await["result"], json!("4321ms"));
    let r = p.finished(b).await;
    assert_eq!(r["state"], "done", "{r}");
    assert_ne!(r["result"][0], json!("4321ms"), "{r}");
    assert_ne!(r["result"][1], json!("pg_catalog"), "{r}");
    assert_eq!(r["result"][2], json!(p.role), "{r}");
}

#[tokio::test]
async fn env_records_browse_search_create_write_unlink() {
    let p = PyProject::new("db").await;
    p.sql(
        "CREATE TABLE partner (id serial PRIMARY KEY, name text NOT NULL, email text, tags text[]);
         INSERT INTO partner (name, email) VALUES ('ann', 'a@x'), ('bob', 'b@x'), ('cid', NULL);",
    )
    .await;
    let code = r#"
def handle_cron():
    Partner = env['partner']
    out = {'table': Partner.table}
    new = Partner.create({'name': 'dan', 'tags': ['x', 'y']})
    out['created'] = [new.id, new.name, new.tags, new['email']]
    found = Partner.search("name LIKE $1", '%n', order='id DESC')
    out['search'] = [r.name for r in found]
    out['limit'] = Partner.search("TRUE", order='id', limit=2).ids
    recs = Partner.browse([1, 2])
    out['browse'] = [len(recs), recs.ids, [r.email for r in recs]]
    recs.write({'email': 'same@x'})
    out['written'] = [r.email for r in Partner.browse([1, 2])]
    Partner.browse(3).unlink()
    out['after_unlink'] = Partner.search('TRUE', order='id').ids
    out['exists'] = Partner.browse([1, 3]).exists().ids
    out['single'] = Partner.browse(2).name
    out['union'] = (Partner.browse(1) | Partner.browse(2)).ids
    out['minus'] = (Partner.browse([1, 2]) - Partner.browse(1)).ids
    out['read'] = Partner.browse(1).read()[0]['name']
    try:
        recs.name
    except ValueError as e:
        out['ensure_one'] = 'single record' in str(e)
    try:
        Partner.browse(99).name
    except UserError as e:
        out['missing'] = 'no row' in str(e)
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "table": "public.partner",
            "created": [4, "dan", ["x", "y"], null],
            "search": ["dan", "ann"],
            "limit": [1, 2],
            "browse": [2, [1, 2], ["a@x", "b@x"]],
            "written": ["same@x", "same@x"],
            "after_unlink": [1, 2, 4],
            "exists": [1],
            "single": "bob",
            "union": [1, 2],
            "minus": [2],
            "read": "ann",
            "ensure_one": true,
            "missing": true,
        })
    );
    let err = p
        .error("def handle_cron():\n    env['nope']\n", "handle_cron")
        .await;
    assert!(err.contains("no such table"), "{err}");
}

#[tokio::test]
async fn records_with_composite_and_uuid_keys() {
    let p = PyProject::new("db").await;
    p.sql(
        "CREATE TABLE pair (a int, b text, v int, PRIMARY KEY (a, b));
         INSERT INTO pair VALUES (1, 'x', 10), (1, 'y y', 20), (2, 'x', 30);
         CREATE TABLE doc (id uuid PRIMARY KEY, title text);
         INSERT INTO doc VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'hello');",
    )
    .await;
    let code = r#"
def handle_cron():
    Pair = env['public.pair']
    recs = Pair.browse([(1, 'x'), (1, 'y y')])
    out = {'values': [r.v for r in recs], 'ids': recs.ids}
    Pair.browse((2, 'x')).write({'v': 31})
    out['written'] = Pair.search('a = $1', 2).v
    out['doc'] = env['doc'].browse('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11').title
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({"values": [10, 20], "ids": [[1, "x"], [1, "y y"]], "written": 31, "doc": "hello"})
    );
}

#[tokio::test]
async fn handle_db_gets_records_of_the_event() {
    let p = PyProject::new("db").await;
    p.sql(
        "CREATE TABLE \"Order\" (id bigint PRIMARY KEY, state text);
         INSERT INTO \"Order\" VALUES (1, 'draft'), (2, 'done');",
    )
    .await;
    let task = p
        .task(
            "orders",
            r#"
def handle_db(records):
    out = {'n': len(records), 'ids': records.ids, 'states': [r.state for r in records]}
    if records and records[0].state != 'gone':
        records.write({'state': 'seen'})
    else:
        try:
            records.write({'state': 'x'})
        except UserError as e:
            out['readonly'] = 'read-only' in str(e)
    return out
"#,
        )
        .await;
    let update = p
        .job(
            task,
            "handle_db",
            json!({"event": "update", "table": "public.Order", "keys": [1, 2, 99]}),
        )
        .await;
    let report = p.run(update).await;
    assert_eq!(
        report["result"],
        json!({"n": 2, "ids": [1, 2], "states": ["draft", "done"]}),
        "{report}"
    );
    let seen: i64 = p
        .scalar("SELECT count(*) FROM \"Order\" WHERE state = 'seen'")
        .await;
    assert_eq!(seen, 2);
    let delete = p
        .job(
            task,
            "handle_db",
            json!({"event": "delete", "table": "public.Order", "keys": [7],
                   "old": [{"id": 7, "state": "gone"}]}),
        )
        .await;
    let report = p.run(delete).await;
    assert_eq!(
        report["result"],
        json!({"n": 1, "ids": [7], "states": ["gone"], "readonly": true}),
        "{report}"
    );
}

#[tokio::test]
async fn savepoints_let_task_code_recover_from_database_errors() {
    let p = PyProject::new("db").await;
    p.sql("CREATE TABLE u (k text PRIMARY KEY)").await;
    let code = r#"
def handle_cron():
    db.execute("INSERT INTO u VALUES ('a')")
    try:
        with db.savepoint():
            db.execute("INSERT INTO u VALUES ('b')")
            db.execute("INSERT INTO u VALUES ('a')")
    except DatabaseError as e:
        caught = e.code
    with db.savepoint():
        db.execute("INSERT INTO u VALUES ('c')")
    return caught
"#;
    assert_eq!(p.result(code, "handle_cron").await, json!("23505"));
    let keys: String = p
        .scalar("SELECT string_agg(k, ',' ORDER BY k) FROM u")
        .await;
    assert_eq!(keys, "a,c");
    // Catching the error without a savepoint: the job cannot keep its writes.
    let err = p
        .error(
            "def handle_cron():\n    db.execute(\"INSERT INTO u VALUES ('d')\")\n    try:\n        db.execute(\"INSERT INTO u VALUES ('a')\")\n    except DatabaseError:\n        pass\n    return 1\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("aborted its transaction") && err.contains("db.savepoint()"),
        "{err}"
    );
    let n: i64 = p.scalar("SELECT count(*) FROM u WHERE k = 'd'").await;
    assert_eq!(n, 0);
    // The worker's batch goes on: the next job commits.
    assert_eq!(
        p.result(
            "def handle_cron():\n    return db.execute(\"INSERT INTO u VALUES ('e')\")\n",
            "handle_cron"
        )
        .await,
        json!(1)
    );
}

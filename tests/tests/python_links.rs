// Links from task code, through real worker processes: record.set_link,
// records.search_links, set_link/search_links/get_link between external systems, link
// sets (== - | & ^, len, iteration), .record/.odoo, .external, .sync_date, .get(system),
// update_links and unlink — and their rollback with a failed job.
use pg_sync_tests::python::PyProject;
use serde_json::json;

async fn project() -> PyProject {
    let p = PyProject::new("links").await;
    p.sql(
        "CREATE TABLE partner (id bigserial PRIMARY KEY, name text);
         INSERT INTO partner (name) VALUES ('ann'), ('bob'), ('cid');",
    )
    .await;
    p
}

#[tokio::test]
async fn local_links_and_link_sets() {
    let p = project().await;
    let code = r#"
def handle_cron():
    P = env['partner']
    a, b, c = P.browse(1), P.browse(2), P.browse(3)
    out = {}
    l1 = a.set_link('crm', 'ext-1')
    l2 = b.set_link('crm', 'ext-2', sync_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    out['set'] = [len(l1), l1.external, l1.record.id, l1.odoo.name, l1.relation]
    out['same_again'] = a.set_link('crm', 'ext-1') == l1
    try:
        with db.savepoint():
            a.set_link('crm', 'ext-3')
        out['conflict'] = False
    except DatabaseError:
        out['conflict'] = True
    return out

def more():
    P = env['partner']
    a, b, c = P.browse(1), P.browse(2), P.browse(3)
    out = {}
    l1 = a.search_links('crm')
    l2 = b.search_links('crm')
    m2m = a.set_link('crm', 'ext-3', allow_many2many=True)
    links = P.browse([1, 2]).search_links('crm')
    out['search'] = sorted(links.external)
    out['ops'] = [len(links - l1), len(links & l1), len(l1 | l2), len(links ^ l1), (l1 | l2) == (l2 | l1), links == links, l1 == l2]
    out['iter'] = sorted(l.external for l in links)
    out['record_set'] = sorted(links.record.ids)
    out['get_link'] = get_link('crm', 'ext-2').record.name
    none = get_link('crm', 'nope')
    out['get_link_none'] = [len(none), none.record, bool(none)]
    out['sync_date'] = l2.sync_date.isoformat()
    out['updated'] = l2.update_links(datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)).sync_date.isoformat()
    out['unlinked'] = m2m.unlink()
    out['left'] = len(P.browse([1, 2]).search_links('crm'))
    out['no_links'] = len(c.search_links('crm'))
    return out
"#;
    let task = p.task("links", code).await;
    let job = p.job(task, "handle_cron", serde_json::Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(
        report["result"],
        json!({"set": [1, "ext-1", 1, "ann", "crm"], "same_again": true, "conflict": true}),
        "{report}"
    );
    let job = p.job(task, "more", serde_json::Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(
        report["result"],
        json!({
            "search": ["ext-1", "ext-2", "ext-3"],
            "ops": [2, 1, 2, 2, true, true, false],
            "iter": ["ext-1", "ext-2", "ext-3"],
            "record_set": [1, 2],
            "get_link": "bob",
            "get_link_none": [0, null, false],
            "sync_date": "2024-01-01T00:00:00+00:00",
            "updated": "2025-06-01T00:00:00+00:00",
            "unlinked": 1,
            "left": 2,
            "no_links": 0,
        }),
        "{report}"
    );
    let stored: String = p
        .scalar(
            "SELECT sync_date::date::text FROM sync.link WHERE ref2 = 'ext-2' OR ref1 = 'ext-2'",
        )
        .await;
    assert_eq!(stored, "2025-06-01");
}

#[tokio::test]
async fn external_links_between_two_systems() {
    let p = project().await;
    let code = r#"
def handle_cron():
    e = set_link('gh2trello', {'github': 12, 'trello': 'abc'})
    set_link('gh2trello', {'github': 13, 'trello': 'def'})
    return {
        'get': [e.get('github'), e.get('trello')],
        'search_list': len(search_links('gh2trello', {'github': [12, 13], 'trello': None})),
        'search_one': search_links('gh2trello', {'github': 13, 'trello': None}).get('trello'),
        'get_link': get_link('gh2trello', {'github': 12, 'trello': None}).get('trello'),
        'missing': len(get_link('gh2trello', {'github': 99, 'trello': None})),
    }
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({"get": [["12"], ["abc"]], "search_list": 2, "search_one": ["def"],
               "get_link": ["abc"], "missing": 0})
    );
    let err = p
        .error(
            "def handle_cron():\n    set_link('gh2trello', {'github': 12})\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("a dict of two systems"), "{err}");
}

#[tokio::test]
async fn links_of_a_failed_job_roll_back() {
    let p = project().await;
    let err = p
        .error(
            "def handle_cron():\n    env['partner'].browse(1).set_link('crm', 'x')\n    raise UserError('stop')\n",
            "handle_cron",
        )
        .await;
    assert!(err.contains("stop"), "{err}");
    let n: i64 = p.scalar("SELECT count(*) FROM sync.link").await;
    assert_eq!(n, 0);
}

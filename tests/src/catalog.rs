// A text picture of everything pg_sync puts in a database's catalog (tables, columns,
// constraints, indexes, triggers, functions, views, types, grants, comments, roles), for
// comparing an upgraded installation with a fresh one line by line.
use tokio_postgres::Client;

/// Objects of the extension: its schema `sync`, and its functions elsewhere (`sync_*`).
const PICTURE: &str = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_sync'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (
    SELECT c.oid, c.relname, c.relkind FROM pg_class c
    WHERE c.relnamespace = 'sync'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S', 'c', 'm')
),
procs AS (
    SELECT p.oid FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
)
SELECT line FROM (
    SELECT format('relation %s %s options=%s acl=%s comment=%s', r.relname, r.relkind,
                  c.reloptions, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(c.relacl) x), obj_description(r.oid, 'pg_class')) AS line
    FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT format('column %s.%s %s notnull=%s default=%s identity=%s acl=%s comment=%s compression=%s',
                  r.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid), a.attidentity, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x),
                  col_description(r.oid, a.attnum), a.attcompression)
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
    FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s %s', r.relname, pg_get_viewdef(r.oid))
    FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('function %s returns %s lang=%s secdef=%s volatile=%s strict=%s parallel=%s config=%s acl=%s src=%s comment=%s',
                  p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.prosecdef,
                  p.provolatile, p.proisstrict, p.proparallel, p.proconfig, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(p.proacl) x),
                  md5(p.prosrc || coalesce(p.probin, '')), obj_description(p.oid, 'pg_proc'))
    FROM procs JOIN pg_proc p ON p.oid = procs.oid JOIN pg_language l ON l.oid = p.prolang
    UNION ALL
    SELECT format('type %s %s', t.typname, t.typtype)
    FROM pg_type t WHERE t.typnamespace = 'sync'::regnamespace AND t.typtype IN ('c', 'e', 'd')
      AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    UNION ALL
    SELECT format('event trigger %s on %s calls %s tags=%s enabled=%s', e.evtname, e.evtevent,
                  e.evtfoid::regproc, e.evttags, e.evtenabled)
    FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
    UNION ALL
    SELECT format('schema sync acl=%s comment=%s', (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(n.nspacl) x), obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n WHERE n.nspname = 'sync'
    UNION ALL
    SELECT format('member of extension: %s', pg_describe_object(m.classid, m.objid, 0))
    FROM members m
    UNION ALL
    SELECT format('role %s login=%s inherit=%s super=%s createrole=%s', a.rolname, a.rolcanlogin,
                  a.rolinherit, a.rolsuper, a.rolcreaterole)
    FROM pg_roles a WHERE a.rolname LIKE 'sync\_%'
    UNION ALL
    SELECT format('membership %s in %s', m.rolname, g.rolname)
    FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid
    WHERE m.rolname LIKE 'sync\_%' AND g.rolname LIKE ANY (ARRAY['sync\_%', 'pg\_%'])
) lines
ORDER BY line
"#;

/// Every line of the picture, sorted.
pub async fn picture(c: &Client) -> Vec<String> {
    c.query(PICTURE, &[])
        .await
        .unwrap_or_else(|e| panic!("catalog picture: {e:?}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Lines only in `a` and lines only in `b`.
pub fn difference(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let only_a = a.iter().filter(|l| !b.contains(l)).cloned().collect();
    let only_b = b.iter().filter(|l| !a.contains(l)).cloned().collect();
    (only_a, only_b)
}

// The links page: search one relation's links by refs with sync_search_links (as the
// person), or list its newest links; PostgreSQL's refusals shown at their field.
use crate::console::layout::{self, time};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/links", get(page))
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    relation: String,
    /// JSON: {"system": ref or [refs] or null, ...}, as sync_search_links takes it.
    #[serde(default)]
    refs: String,
}

const LIMIT: i64 = 200;

const BY_REFS_SQL: &str = "
SELECT id, system1, ref1, system2, ref2, many2many, sync_date
FROM sync_search_links($1::text, $2::text::jsonb) ORDER BY id DESC LIMIT 201";

const NEWEST_SQL: &str = "
SELECT id, system1, ref1, system2, ref2, many2many, sync_date
FROM sync.link WHERE relation = $1 ORDER BY id DESC LIMIT 201";

async fn page(person: Person, Query(s): Query<Search>) -> Result<Markup, ConsoleError> {
    let relation = s.relation.trim();
    let refs = s.refs.trim();
    let result = match (relation.is_empty(), refs.is_empty()) {
        (true, _) => None,
        (false, true) => Some(person.db.query(NEWEST_SQL, &[&relation]).await),
        (false, false) => Some(person.db.query(BY_REFS_SQL, &[&relation, &refs]).await),
    };
    let (rows, errors) = match result {
        None => (None, FormErrors::default()),
        Some(Ok(rows)) => (Some(rows), FormErrors::default()),
        Some(Err(e)) if e.as_db_error().is_some() => {
            let fields: [(&'static str, &[&str]); 2] = [
                ("refs", &["json", "refs", "system"][..]),
                ("relation", &["relation"][..]),
            ];
            (None, FormErrors::from_pg(&e, &fields))
        }
        Some(Err(e)) => return Err(e.into()),
    };
    let body = html! {
        (errors.general())
        form.filters #link-search method="get" action="/console/links" {
            label { "relation"
                input type="text" name="relation" value=(s.relation) size="16" required
                    class=[errors.has("relation").then_some("invalid")];
                (errors.show("relation"))
            }
            label { "refs (JSON; empty: the newest links)"
                input type="text" name="refs" value=(s.refs) size="48"
                    placeholder=r#"{"github": ["12", "13"], "trello": null}"#
                    class=[errors.has("refs").then_some("invalid")];
                (errors.show("refs"))
            }
            button type="submit" { "Search" }
        }
        @if let Some(rows) = &rows {
            @if rows.is_empty() { p.muted #no-links { "No link matches." } }
            @else {
                table #links {
                    thead { tr { th.num { "id" } th { "system 1" } th { "ref 1" } th { "system 2" }
                                 th { "ref 2" } th { "many2many" } th { "synced" } } }
                    tbody { @for r in rows.iter().take(LIMIT as usize) { tr {
                        td.num { (r.get::<_, i64>(0)) }
                        td { (r.get::<_, String>(1)) } td { code { (r.get::<_, String>(2)) } }
                        td { (r.get::<_, String>(3)) } td { code { (r.get::<_, String>(4)) } }
                        td { @if r.get::<_, bool>(5) { "yes" } }
                        td { (time(&r.get(6))) }
                    } } }
                }
                @if rows.len() as i64 > LIMIT { p.muted { "The newest " (LIMIT) " are shown: narrow the refs." } }
            }
        }
    };
    Ok(layout::page(&person, "/console/links", "Links", body))
}

// The console's page frame (head, nav bar, who is signed in, sign-out form) and small
// shared pieces of markup; maud escapes every value put into it.
use super::pages::NAV;
use super::person::Person;
use maud::{html, Markup, DOCTYPE};

/// A page for a signed-in person. `active` is the nav entry to highlight (its path).
pub fn page(person: &Person, active: &str, title: &str, body: Markup) -> Markup {
    frame(
        title,
        html! {
            nav.top {
                a.brand href="/console/" { "pg_sync" }
                @for (path, label) in NAV {
                    a href=(path) class=[(*path == active).then_some("active")] { (label) }
                }
                span.who {
                    span.role title="your PostgreSQL role" { (person.role) }
                    " "
                    span.kind { (person.kind.name()) }
                    form.inline method="post" action="/console/signout" {
                        (csrf_field(person))
                        button.link type="submit" { "Sign out" }
                    }
                }
            }
            main { h1 { (title) } (body) }
        },
    )
}

/// A page without the nav bar (sign-in, errors before sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    frame(
        title,
        html! {
            nav.top { a.brand href="/console/" { "pg_sync" } }
            main.narrow { h1 { (title) } (body) }
        },
    )
}

fn frame(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pg_sync console" }
                link rel="stylesheet" href=(super::assets::STYLE_PATH);
            }
            body { (content) }
        }
    }
}

/// The hidden field carrying the person's CSRF token: put it in every form.
pub fn csrf_field(person: &Person) -> Markup {
    html! { input type="hidden" name="csrf" value=(person.csrf); }
}

/// A time as the console shows it (UTC, to the second).
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time; a dash for none.
pub fn time_opt(t: &Option<chrono::DateTime<chrono::Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { "–" },
    }
}

/// A job state as a coloured badge.
pub fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge state-" (state) } { (state) } }
}

/// JSON, indented, in a block that can be folded away when long.
pub fn json_block(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let long = text.lines().count() > 12;
    html! {
        @if long {
            details open { summary { "JSON, " (text.lines().count()) " lines" } pre.code { (text) } }
        } @else {
            pre.code { (text) }
        }
    }
}

/// A notice at the top of a page (after a redirect: `?done=...`).
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

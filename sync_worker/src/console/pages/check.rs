// The code check of the editing pages: compile code layers in a child process
// (code_check::check_in_child) and show the problems as a list and at their lines.
use crate::code_check::{check_in_child, CodeProblem};
use maud::{html, Markup};
use serde_json::Value;

/// The problems of a document's layers; a check that could not run is one problem.
pub async fn run(doc: &Value) -> Vec<CodeProblem> {
    match check_in_child(doc).await {
        Ok(p) => p,
        Err(e) => vec![CodeProblem {
            layer: "check".into(),
            line: None,
            column: None,
            message: e.to_string(),
        }],
    }
}

/// The lines of `layer`'s problems, for the editor to mark (`data-error-lines`).
pub fn lines_of(problems: &[CodeProblem], layer: &str) -> String {
    problems
        .iter()
        .filter(|p| p.layer == layer)
        .filter_map(|p| p.line)
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The outcome of a check: "compiles" or the list of problems, each at its layer and line.
pub fn outcome(problems: &[CodeProblem], saved: bool) -> Markup {
    html! {
        @if problems.is_empty() {
            p.notice #check-ok role="status" { "Every layer compiles." }
        } @else {
            div.card #problems role="alert" {
                strong.error {
                    (problems.len()) " problem" (if problems.len() == 1 { "" } else { "s" })
                    @if !saved { ": nothing was saved" }
                }
                ul.problems {
                    @for p in problems {
                        li data-layer=(p.layer) data-line=[p.line] {
                            span.at { (p.layer)
                                @if let Some(l) = p.line { ", line " (l) }
                                @if let Some(c) = p.column { ", column " (c) }
                            }
                            ": " (p.message)
                        }
                    }
                }
            }
        }
    }
}

/// The outcome of a check that found problems; nothing when there is none to show.
pub fn outcome_if(problems: &[CodeProblem]) -> Markup {
    if problems.is_empty() {
        html! {}
    } else {
        outcome(problems, false)
    }
}

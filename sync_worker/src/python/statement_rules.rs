// Which statements task code may send, read from a statement's leading words (comments
// skipped): the rules of the job's connection (db.rs) and of a remote one (remote/).
//
// The job's rules: no transaction control (the executor commits whole batches), no
// session state that would outlive the job, no role switches. A remote connection only
// refuses transaction control, which its transaction() blocks do.
use super::errors::DbError;

/// Statements task code may not run on the job's connection.
pub(crate) fn check_job_statement(sql: &str) -> Result<(), DbError> {
    let words = leading_words(sql, 5);
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let (first, second, third) = (word(0), word(1), word(2));
    let refused = match first {
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release"
        | "prepare" => Some("transaction control"),
        "deallocate" | "discard" | "listen" | "unlisten" | "load" | "declare" | "fetch"
        | "move" | "close" => Some("session-level statements"),
        "reset" => Some("RESET"),
        // Code that runs many statements in one (it could switch roles and back unseen).
        "do" => Some("DO blocks"),
        "create" => {
            let kind = if second == "or" && third == "replace" {
                word(3)
            } else {
                second
            };
            match kind {
                "function" | "procedure" => Some("CREATE FUNCTION / PROCEDURE"),
                _ => None,
            }
        }
        "set" => {
            let target = if second == "local" || second == "session" {
                third
            } else {
                second
            };
            match target {
                "role" | "authorization" | "session" | "transaction" | "characteristics" => {
                    Some("SET ROLE / SESSION AUTHORIZATION / TRANSACTION")
                }
                _ => None,
            }
        }
        _ => None,
    };
    match refused {
        Some(what) => Err(DbError::refused(
            format!("task code may not run {what} ({} ...)", first.to_uppercase()),
            "Each job runs inside the worker's transaction under the project's run_as role; raise an exception to roll the job's writes back.",
        )),
        None => Ok(()),
    }
}

/// Statements that would confuse a remote connection's transaction bookkeeping.
pub(crate) fn check_remote_statement(sql: &str) -> Result<(), DbError> {
    let words = leading_words(sql, 2);
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let refused = matches!(
        first,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release"
    ) || (first == "prepare" && second == "transaction");
    if refused {
        return Err(DbError::refused(
            format!(
                "transaction control ({} ...) is not run through execute()",
                first.to_uppercase()
            ),
            "Statements outside a transaction commit one by one; group them with `with postgres.transaction():`.",
        ));
    }
    Ok(())
}

/// The first `n` words of a statement, lowercased, skipping comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut words = Vec::new();
    while i < b.len() && words.len() < n {
        let c = b[i];
        if c.is_ascii_whitespace() || c == b'(' {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            // Comments nest in PostgreSQL.
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            words.push(sql[start..i].to_ascii_lowercase());
        } else {
            break;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_transaction_control_and_role_switches() {
        for sql in [
            "COMMIT",
            "  /* x /* nested */ */ -- c\n rollback to savepoint x",
            "set role postgres",
            "SET LOCAL ROLE x",
            "set session authorization postgres",
            "reset role",
            "RESET ALL",
            "begin",
            "Prepare transaction 'x'",
            "discard all",
            "listen x",
            "DO $$ BEGIN END $$",
            "create or replace function f() returns int language sql as 'select 1'",
            "CREATE PROCEDURE p() LANGUAGE sql AS ''",
        ] {
            assert!(check_job_statement(sql).is_err(), "{sql}");
        }
        for sql in [
            "select 1",
            "SET LOCAL statement_timeout = 1000",
            "update t set role = 'x'",
            "with x as (select 1) select * from x",
            "(select 1)",
            "create table t (id int)",
        ] {
            assert!(check_job_statement(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn a_remote_connection_refuses_only_transaction_control() {
        for sql in [
            "BEGIN",
            "/* c */ commit",
            "savepoint a",
            "PREPARE TRANSACTION 'x'",
        ] {
            assert!(check_remote_statement(sql).is_err(), "{sql}");
        }
        for sql in [
            "select 1",
            "SET ROLE other",
            "prepare q as select 1",
            "DO $$ BEGIN END $$",
        ] {
            assert!(check_remote_statement(sql).is_ok(), "{sql}");
        }
    }
}

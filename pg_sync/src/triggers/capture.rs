// Capture of row events: AFTER ROW triggers append keys to a per-statement frame, the
// AFTER STATEMENT trigger turns the frame into sync.job rows (or timed schedule rows).
//
// Job args, the contract with the Python runtime (which builds `records` from it):
//
//   {"event": "create" | "update" | "delete" | "timed",
//    "table": "<schema>.<table>",
//    "keys":  [key, ...],
//    "old":   [{"col": value, ...}, ...]}      -- delete jobs only
//
// - One job per (db trigger, statement, event): a create_or_update trigger hit by an
//   INSERT ... ON CONFLICT DO UPDATE gets a "create" job and an "update" job.
// - `keys` holds at most `chunk_size` keys, in capture order; more keys make more jobs
//   from the same statement (all inserted by one INSERT, so one NOTIFY).
// - A key is a JSON scalar for a single-column primary key: a number for smallint,
//   integer and bigint, a string (the PostgreSQL text form) for any other type (text,
//   uuid, ...). A composite key is a JSON array of those scalars in key column order.
// - `old` (delete only) holds row_to_json(OLD) of each deleted row, aligned with `keys`.
//
// Statement identity: a BEFORE STATEMENT trigger pushes a frame on a per-db-trigger
// stack, row events append to the top frame and the AFTER STATEMENT trigger pops it.
// PostgreSQL fires a statement's AFTER events when that statement ends, after those of
// any statement nested in it, so frames nest like the statements. Frames remember the
// subtransaction that opened them: aborting a subtransaction (failed statement in a
// savepoint or a PL/pgSQL exception block) or the transaction drops their keys.
use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

use super::keys::{primary_key, push_json_string, relation_name, timestamptz_at, write_row_json};
use super::{finfo_v1, trigger_args};
use crate::error::*;

/// JSON values separated by commas, with the end offset of each value for chunking.
#[derive(Default)]
struct JsonList {
    text: String,
    ends: Vec<usize>,
}

impl JsonList {
    fn push(&mut self, item: &str) {
        if !self.ends.is_empty() {
            self.text.push(',');
        }
        self.text.push_str(item);
        self.ends.push(self.text.len());
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    /// Items `from..to` as the inside of a JSON array.
    fn slice(&self, from: usize, to: usize) -> &str {
        let start = if from == 0 {
            0
        } else {
            self.ends[from - 1] + 1
        };
        &self.text[start..self.ends[to - 1]]
    }
    fn items(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.slice(i, i + 1))
    }
}

/// Everything one statement captured for one db trigger.
struct Frame {
    subxact: pg_sys::SubTransactionId,
    /// The role that ran the statement (current_user), recorded as the job's user.
    user: pg_sys::Oid,
    created: JsonList,
    updated: JsonList,
    deleted: JsonList,
    old_rows: JsonList,
    /// timed: rows whose due time is (re)set, with their date, and rows to unschedule.
    scheduled: JsonList,
    dates: Vec<Option<TimestampWithTimeZone>>,
    unscheduled: JsonList,
}

impl Frame {
    fn new() -> Frame {
        // SAFETY: plain reads of backend state.
        let (subxact, user) =
            unsafe { (pg_sys::GetCurrentSubTransactionId(), pg_sys::GetUserId()) };
        Frame {
            subxact,
            user,
            created: JsonList::default(),
            updated: JsonList::default(),
            deleted: JsonList::default(),
            old_rows: JsonList::default(),
            scheduled: JsonList::default(),
            dates: Vec::new(),
            unscheduled: JsonList::default(),
        }
    }
}

thread_local! {
    /// Open frames per db trigger id, innermost statement last.
    static FRAMES: RefCell<HashMap<i64, Vec<Frame>>> = RefCell::new(HashMap::new());
    static CALLBACKS_REGISTERED: RefCell<bool> = const { RefCell::new(false) };
    static PLANS: RefCell<Vec<(&'static str, OwnedPreparedStatement)>> = const { RefCell::new(Vec::new()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE
    ) {
        FRAMES.with(|f| f.borrow_mut().clear());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Subtransaction ids grow within a transaction: frames opened in the aborted
        // subtransaction or its children have ids >= my_subid.
        FRAMES.with(|f| {
            for stack in f.borrow_mut().values_mut() {
                while stack.last().is_some_and(|fr| fr.subxact >= my_subid) {
                    stack.pop();
                }
            }
        });
    }
}

fn ensure_callbacks() {
    CALLBACKS_REGISTERED.with(|r| {
        if !*r.borrow() {
            // SAFETY: transaction callbacks may be registered at any time; ours only
            // touch thread-local buffers and never raise.
            unsafe {
                pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
                pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
            }
            *r.borrow_mut() = true;
        }
    });
}

/// The trigger data of a call, or an error unless the trigger manager called the
/// function as a row (`row_level`) or statement trigger with arguments.
///
/// # Safety
/// `fcinfo` must be the call info PostgreSQL passed to the function.
unsafe fn trigger_data<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    row_level: bool,
    func: &str,
) -> &'a pg_sys::TriggerData {
    // SAFETY: fcinfo is valid; context is either NULL or a Node.
    unsafe {
        let ctx = (*fcinfo).context;
        let ok = !ctx.is_null() && (*ctx).type_ == pg_sys::NodeTag::T_TriggerData;
        if ok {
            let td = &*(ctx as *const pg_sys::TriggerData);
            let is_row = td.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0;
            if is_row == row_level
                && !td.tg_trigger.is_null()
                && td.tg_trigger.as_ref().is_some_and(|t| t.tgnargs >= 1)
            {
                return td;
            }
        }
        raise(
            ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            format!("{func} must only be used by the triggers pg_sync installs"),
            "Create db triggers with INSERT INTO sync.db_trigger.",
        )
    }
}

fn parse_arg<T: std::str::FromStr>(args: &[&std::ffi::CStr], i: usize, func: &str) -> T {
    args.get(i)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            raise(
                ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                format!("{func}: bad trigger argument {i}"),
                "Reinstall the db trigger: UPDATE sync.db_trigger SET active = active WHERE id = ...",
            )
        })
}

fn with_top_frame<R>(id: i64, f: impl FnOnce(&mut Frame) -> R) -> R {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let stack = frames.entry(id).or_default();
        if stack.is_empty() {
            // Only if the statement trigger was disabled by hand: still capture.
            stack.push(Frame::new());
        }
        f(stack.last_mut().expect("a frame"))
    })
}

// ---------------------------------------------------------------------------------
// BEFORE STATEMENT: open a frame. Arguments: (db trigger id).
// ---------------------------------------------------------------------------------

finfo_v1!(pg_finfo_pg_sync_dbt_statement_start);
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_dbt_statement_start(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    const FUNC: &str = "sync.dbt_statement_start()";
    // SAFETY: called by PostgreSQL with its fcinfo.
    let td = unsafe { trigger_data(fcinfo, false, FUNC) };
    // SAFETY: tg_trigger is the current trigger.
    let args = unsafe { trigger_args(&*td.tg_trigger) };
    let id: i64 = parse_arg(&args, 0, FUNC);
    ensure_callbacks();
    FRAMES.with(|f| f.borrow_mut().entry(id).or_default().push(Frame::new()));
    pg_sys::Datum::from(0)
}

// ---------------------------------------------------------------------------------
// AFTER ROW: append the row. Arguments: (db trigger id, mode[, date attnum]) where mode
// is 'e' (the event: insert/update/delete), 's' (timed: schedule) or 'u' (unschedule).
// ---------------------------------------------------------------------------------

finfo_v1!(pg_finfo_pg_sync_dbt_capture);
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_dbt_capture(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    const FUNC: &str = "sync.dbt_capture()";
    // SAFETY: called by PostgreSQL with its fcinfo.
    let td = unsafe { trigger_data(fcinfo, true, FUNC) };
    // SAFETY: tg_trigger is the current trigger.
    let args = unsafe { trigger_args(&*td.tg_trigger) };
    let id: i64 = parse_arg(&args, 0, FUNC);
    let mode = args
        .get(1)
        .and_then(|m| m.to_bytes().first().copied())
        .unwrap_or(b'e');
    let op = td.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    // The row as it is now (old row for a delete).
    let slot = if op == pg_sys::TRIGGER_EVENT_UPDATE {
        td.tg_newslot
    } else {
        td.tg_trigslot
    };
    // SAFETY: tg_relation is open for the trigger call.
    let pk = unsafe { primary_key(td.tg_relation) };
    let date = if mode == b's' {
        let attnum: i32 = parse_arg(&args, 2, FUNC);
        // SAFETY: slot holds a row of the trigger's table.
        unsafe { timestamptz_at(slot, attnum) }
    } else {
        None
    };
    // Encode before touching the frames: the output functions called here may raise,
    // and nothing of ours should be mid-update when they do.
    let mut key = String::new();
    // SAFETY: slot holds a row of the table pk was loaded for.
    unsafe { pk.write_key(slot, &mut key) };
    let old_row = (mode == b'e' && op == pg_sys::TRIGGER_EVENT_DELETE).then(|| {
        let mut row = String::new();
        // SAFETY: as above.
        unsafe { write_row_json(slot, &mut row) };
        row
    });
    ensure_callbacks();
    with_top_frame(id, |frame| {
        let list = match (mode, op) {
            (b's', _) => &mut frame.scheduled,
            (b'u', _) => &mut frame.unscheduled,
            (_, pg_sys::TRIGGER_EVENT_INSERT) => &mut frame.created,
            (_, pg_sys::TRIGGER_EVENT_UPDATE) => &mut frame.updated,
            _ => &mut frame.deleted,
        };
        list.push(&key);
        if mode == b's' {
            frame.dates.push(date);
        }
        if let Some(row) = &old_row {
            frame.old_rows.push(row);
        }
    });
    pg_sys::Datum::from(0)
}

// ---------------------------------------------------------------------------------
// AFTER STATEMENT: close the frame and enqueue. Arguments: (db trigger id, kind,
// project id, task id, trigger name, chunk size) with kind 'e' (event jobs) or 't'
// (timed: write the schedule). Runs SECURITY DEFINER: the writer of the
// watched table need not be allowed to write sync.job.
// ---------------------------------------------------------------------------------

// The job's language is the writer's (sync.job_lang reads this session's sync.lang and
// the writer's role setting), taken once per statement: the scalar subqueries below are
// uncorrelated, so they run once.
const SQL_INSERT_JOBS: &str = "INSERT INTO sync.job
        (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler, args, user_name, lang)
     SELECT $1, $2, 'db', $3, $4, 'handle_db', a::pg_catalog.jsonb, $5::pg_catalog.name,
            (SELECT sync.job_lang($1, $5::pg_catalog.name))
     FROM pg_catalog.unnest($6::pg_catalog.text[]) AS a";

/// The common case of a statement making one job: a plain VALUES plan is cheaper.
const SQL_INSERT_JOB: &str = "INSERT INTO sync.job
        (project_id, task_id, trigger_kind, trigger_id, trigger_name, handler, args, user_name, lang)
     VALUES ($1, $2, 'db', $3, $4, 'handle_db', $6::pg_catalog.text::pg_catalog.jsonb, $5::pg_catalog.name,
             sync.job_lang($1, $5::pg_catalog.name))";

const SQL_SCHEDULE: &str = "INSERT INTO sync.db_trigger_due AS d (trigger_id, key, due_at, user_name, lang)
     SELECT DISTINCT ON (u.k) $1, u.k::pg_catalog.jsonb, u.t OPERATOR(pg_catalog.+) t.time_offset,
            $2::pg_catalog.name,
            (SELECT sync.job_lang(x.project_id, $2::pg_catalog.name) FROM sync.db_trigger x
             WHERE x.id OPERATOR(pg_catalog.=) $1)
     FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.timestamptz[]))
               WITH ORDINALITY AS u(k, t, n),
          sync.db_trigger t
     WHERE t.id OPERATOR(pg_catalog.=) $1 AND u.t IS NOT NULL
     ORDER BY u.k, u.n DESC
     ON CONFLICT (trigger_id, key) DO UPDATE
        SET due_at = excluded.due_at, user_name = excluded.user_name, lang = excluded.lang";

const SQL_UNSCHEDULE: &str = "DELETE FROM sync.db_trigger_due
     WHERE trigger_id OPERATOR(pg_catalog.=) $1
       AND key OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]::pg_catalog.jsonb[])";

finfo_v1!(pg_finfo_pg_sync_dbt_statement_end);
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_dbt_statement_end(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    const FUNC: &str = "sync.dbt_statement_end()";
    // SAFETY: called by PostgreSQL with its fcinfo.
    let td = unsafe { trigger_data(fcinfo, false, FUNC) };
    // SAFETY: tg_trigger is the current trigger.
    let args = unsafe { trigger_args(&*td.tg_trigger) };
    let id: i64 = parse_arg(&args, 0, FUNC);
    let frame = FRAMES.with(|f| f.borrow_mut().get_mut(&id).and_then(|s| s.pop()));
    let Some(frame) = frame else {
        return pg_sys::Datum::from(0);
    };
    let kind = args
        .get(1)
        .and_then(|m| m.to_bytes().first().copied())
        .unwrap_or(b'e');
    // SAFETY: the role existed when the statement started and still does.
    let user = unsafe {
        let name = pg_sys::GetUserNameFromId(frame.user, true);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    };
    if kind == b't' {
        write_schedule(id, &frame, &user);
    } else {
        // SAFETY: tg_relation is open for the trigger call.
        let table = unsafe { relation_name(td.tg_relation) };
        insert_jobs(id, &args, &frame, &table, &user, FUNC);
    }
    pg_sys::Datum::from(0)
}

fn insert_jobs(
    id: i64,
    args: &[&std::ffi::CStr],
    frame: &Frame,
    table: &str,
    user: &str,
    func: &str,
) {
    let chunk: usize = parse_arg::<usize>(args, 5, func).max(1);
    let mut jobs: Vec<String> = Vec::new();
    for (event, keys, old) in [
        ("create", &frame.created, None),
        ("update", &frame.updated, None),
        ("delete", &frame.deleted, Some(&frame.old_rows)),
    ] {
        let mut from = 0;
        while from < keys.len() {
            let to = (from + chunk).min(keys.len());
            let mut a = String::with_capacity(64 + keys.slice(from, to).len());
            a.push_str("{\"event\":\"");
            a.push_str(event);
            a.push_str("\",\"table\":");
            push_json_string(&mut a, table);
            a.push_str(",\"keys\":[");
            a.push_str(keys.slice(from, to));
            a.push(']');
            if let Some(old) = old {
                a.push_str(",\"old\":[");
                a.push_str(old.slice(from, to));
                a.push(']');
            }
            a.push('}');
            jobs.push(a);
            from = to;
        }
    }
    if jobs.is_empty() {
        return;
    }
    let project: i64 = parse_arg(args, 2, func);
    let task: i64 = parse_arg(args, 3, func);
    let name = args
        .get(4)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (sql, last_type) = if jobs.len() == 1 {
        (SQL_INSERT_JOB, pg_sys::TEXTOID)
    } else {
        (SQL_INSERT_JOBS, pg_sys::TEXTARRAYOID)
    };
    let last: pgrx::datum::DatumWithOid = if jobs.len() == 1 {
        jobs.pop().unwrap_or_default().into()
    } else {
        jobs.into()
    };
    Spi::connect_mut(|client| {
        run_cached(
            client,
            sql,
            &[
                pg_sys::INT8OID,
                pg_sys::INT8OID,
                pg_sys::INT8OID,
                pg_sys::TEXTOID,
                pg_sys::TEXTOID,
                last_type,
            ],
            &[
                project.into(),
                task.into(),
                id.into(),
                name.as_str().into(),
                user.into(),
                last,
            ],
        );
    });
}

fn write_schedule(id: i64, frame: &Frame, user: &str) {
    if frame.scheduled.len() == 0 && frame.unscheduled.len() == 0 {
        return;
    }
    Spi::connect_mut(|client| {
        if frame.unscheduled.len() > 0 {
            let keys: Vec<&str> = frame.unscheduled.items().collect();
            run_cached(
                client,
                SQL_UNSCHEDULE,
                &[pg_sys::INT8OID, pg_sys::TEXTARRAYOID],
                &[id.into(), keys.into()],
            );
        }
        if frame.scheduled.len() > 0 {
            let keys: Vec<&str> = frame.scheduled.items().collect();
            run_cached(
                client,
                SQL_SCHEDULE,
                &[
                    pg_sys::INT8OID,
                    pg_sys::TEXTOID,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::TIMESTAMPTZARRAYOID,
                ],
                &[
                    id.into(),
                    user.into(),
                    keys.into(),
                    frame.dates.clone().into(),
                ],
            );
        }
    });
}

/// Run `sql` through a plan prepared once per backend.
fn run_cached(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    types: &[pg_sys::Oid],
    args: &[pgrx::datum::DatumWithOid],
) {
    let cached = PLANS.with(|p| p.borrow().iter().position(|(k, _)| std::ptr::eq(*k, sql)));
    let idx = match cached {
        Some(i) => i,
        None => {
            let oids: Vec<pgrx::PgOid> = types.iter().map(|o| pgrx::PgOid::from(*o)).collect();
            let plan = client
                .prepare_mut(sql, &oids)
                .or_raise("preparing a db trigger query")
                .keep();
            PLANS.with(|p| {
                let mut p = p.borrow_mut();
                p.push((sql, plan));
                p.len() - 1
            })
        }
    };
    PLANS.with(|p| {
        let p = p.borrow();
        client
            .update(&p[idx].1, None, args)
            .or_raise("a db trigger query");
    });
}

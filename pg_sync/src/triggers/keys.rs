// Primary keys and old row images of captured rows, written as the JSON job args carry.
// Key columns, types and output functions are cached per table for the backend's life.
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::*;

/// How one key column becomes JSON.
enum Encoding {
    /// smallint, integer, bigint: a JSON number.
    Int16,
    Int32,
    Int64,
    /// Every other type: its PostgreSQL text form as a JSON string.
    Text(Box<pg_sys::FmgrInfo>),
}

struct KeyColumn {
    attnum: i32,
    encoding: Encoding,
}

/// The primary key of a table, in key column order.
pub struct PrimaryKey {
    columns: Vec<KeyColumn>,
}

thread_local! {
    static CACHE: RefCell<HashMap<pg_sys::Oid, Rc<PrimaryKey>>> = RefCell::new(HashMap::new());
    static CALLBACK_REGISTERED: RefCell<bool> = const { RefCell::new(false) };
}

/// A changed primary key or column type reaches us as a relcache invalidation.
#[pg_guard]
unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if relid == pg_sys::InvalidOid {
            c.clear();
        } else {
            c.remove(&relid);
        }
    });
}

/// The primary key of `rel`, raising a clear error if it has none.
///
/// # Safety
/// `rel` must be an open relation (the trigger's relation).
pub unsafe fn primary_key(rel: pg_sys::Relation) -> Rc<PrimaryKey> {
    // SAFETY: the caller passes an open relation.
    let relid = unsafe { (*rel).rd_id };
    if let Some(pk) = CACHE.with(|c| c.borrow().get(&relid).cloned()) {
        return pk;
    }
    CALLBACK_REGISTERED.with(|r| {
        if !*r.borrow() {
            // SAFETY: registering a relcache callback is allowed at any time in a
            // backend; `invalidate` only touches our thread-local cache.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(Some(invalidate), pg_sys::Datum::from(0))
            };
            *r.borrow_mut() = true;
        }
    });
    // SAFETY: as above.
    let pk = Rc::new(unsafe { load(rel) });
    CACHE.with(|c| c.borrow_mut().insert(relid, pk.clone()));
    pk
}

unsafe fn load(rel: pg_sys::Relation) -> PrimaryKey {
    // SAFETY: rel is open; RelationGetPrimaryKeyIndex reads (and fills) its relcache
    // entry; index_open/index_close bracket our read of the index's pg_index row;
    // the tuple descriptor has natts attributes.
    unsafe {
        let pkindex = pg_sys::RelationGetPrimaryKeyIndex(rel);
        if pkindex == pg_sys::InvalidOid {
            let name = relation_name(rel);
            raise(
                ERRCODE_INVALID_TABLE_DEFINITION,
                format!("pg_sync db trigger: table \"{name}\" has no primary key any more"),
                "Restore the primary key, or deactivate the db triggers of this table (UPDATE sync.db_trigger SET active = false).",
            )
        }
        let index = pg_sys::index_open(pkindex, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let form = &*(*index).rd_index;
        let nkeys = usize::try_from(form.indnkeyatts).unwrap_or(0);
        let attnums: Vec<i32> = form
            .indkey
            .values
            .as_slice(nkeys)
            .iter()
            .map(|a| i32::from(*a))
            .collect();
        pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);

        let tupdesc = (*rel).rd_att;
        let natts = usize::try_from((*tupdesc).natts).unwrap_or(0);
        let attrs = (*tupdesc).attrs.as_slice(natts);
        let columns = attnums
            .into_iter()
            .map(|attnum| {
                let typid = attrs[usize::try_from(attnum - 1).unwrap_or(0)].atttypid;
                let encoding = match typid {
                    pg_sys::INT2OID => Encoding::Int16,
                    pg_sys::INT4OID => Encoding::Int32,
                    pg_sys::INT8OID => Encoding::Int64,
                    _ => {
                        let mut out = pg_sys::InvalidOid;
                        let mut varlena = false;
                        pg_sys::getTypeOutputInfo(typid, &mut out, &mut varlena);
                        let mut finfo: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
                        // The FmgrInfo lives in our cache, so anything it allocates
                        // must live as long: TopMemoryContext.
                        pg_sys::fmgr_info_cxt(out, &mut *finfo, pg_sys::TopMemoryContext);
                        Encoding::Text(finfo)
                    }
                };
                KeyColumn { attnum, encoding }
            })
            .collect();
        PrimaryKey { columns }
    }
}

/// `<schema>.<table>`, the name job args and links use for a local table.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn relation_name(rel: pg_sys::Relation) -> String {
    // SAFETY: rd_rel of an open relation is valid; get_namespace_name returns a
    // palloc'd string or NULL for a dropped schema.
    unsafe {
        let form = &*(*rel).rd_rel;
        let relname = CStr::from_ptr(form.relname.data.as_ptr()).to_string_lossy();
        let nsp = pg_sys::get_namespace_name(form.relnamespace);
        let nsp = if nsp.is_null() {
            String::new()
        } else {
            CStr::from_ptr(nsp).to_string_lossy().into_owned()
        };
        format!("{nsp}.{relname}")
    }
}

impl PrimaryKey {
    /// Append the JSON key of the row in `slot`: a scalar for a single-column key,
    /// an array for a composite one.
    ///
    /// # Safety
    /// `slot` must hold a row of the table this key was loaded for.
    pub unsafe fn write_key(&self, slot: *mut pg_sys::TupleTableSlot, out: &mut String) {
        let composite = self.columns.len() > 1;
        if composite {
            out.push('[');
        }
        for (i, col) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut isnull = false;
            // SAFETY: the slot belongs to the trigger call and attnum is a valid
            // user column of its descriptor.
            let datum = unsafe { pg_sys::slot_getattr(slot, col.attnum, &mut isnull) };
            if isnull {
                // Cannot happen for a primary key; keep the JSON valid regardless.
                out.push_str("null");
                continue;
            }
            match &col.encoding {
                Encoding::Int16 => push_display(out, datum.value() as i16),
                Encoding::Int32 => push_display(out, datum.value() as i32),
                Encoding::Int64 => push_display(out, datum.value() as i64),
                Encoding::Text(finfo) => {
                    let finfo = &**finfo as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
                    // SAFETY: finfo was set up by fmgr_info_cxt for this column's
                    // output function; the result is a palloc'd C string.
                    let text = unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(finfo, datum)) };
                    push_json_string(out, &text.to_string_lossy());
                }
            }
        }
        if composite {
            out.push(']');
        }
    }
}

fn push_display(out: &mut String, v: impl std::fmt::Display) {
    use std::fmt::Write;
    let _ = write!(out, "{v}");
}

/// Append `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => push_display(out, format_args!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Append the row in `slot` as a JSON object (`row_to_json`), for delete jobs.
///
/// # Safety
/// `slot` must hold a row of the trigger's table.
pub unsafe fn write_row_json(slot: *mut pg_sys::TupleTableSlot, out: &mut String) {
    // SAFETY: ExecFetchSlotHeapTupleDatum builds a composite datum typed with the
    // table's row type in the current (per-event) memory context; row_to_json
    // accepts any composite datum and returns json (text).
    unsafe {
        let row = pg_sys::ExecFetchSlotHeapTupleDatum(slot);
        let Some(json) = pgrx::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(row)])
        else {
            out.push_str("null");
            return;
        };
        let text = pg_sys::text_to_cstring(json.cast_mut_ptr());
        out.push_str(&CStr::from_ptr(text).to_string_lossy());
    }
}

/// The value of a date, timestamp or timestamptz column as timestamptz (None if NULL).
///
/// # Safety
/// `slot` must hold a row of the trigger's table and `attnum` be one of its columns.
pub unsafe fn timestamptz_at(
    slot: *mut pg_sys::TupleTableSlot,
    attnum: i32,
) -> Option<TimestampWithTimeZone> {
    let mut isnull = false;
    // SAFETY: see above; the conversion functions take one by-value datum.
    unsafe {
        let datum = pg_sys::slot_getattr(slot, attnum, &mut isnull);
        if isnull {
            return None;
        }
        let natts = (*(*slot).tts_tupleDescriptor).natts;
        let attrs = (*(*slot).tts_tupleDescriptor)
            .attrs
            .as_slice(usize::try_from(natts).unwrap_or(0));
        let typid = attrs[usize::try_from(attnum - 1).unwrap_or(0)].atttypid;
        let tz = match typid {
            pg_sys::TIMESTAMPTZOID => Some(datum),
            pg_sys::TIMESTAMPOID => {
                pgrx::direct_function_call_as_datum(pg_sys::timestamp_timestamptz, &[Some(datum)])
            }
            pg_sys::DATEOID => {
                pgrx::direct_function_call_as_datum(pg_sys::date_timestamptz, &[Some(datum)])
            }
            _ => raise(
                ERRCODE_DATATYPE_MISMATCH,
                "pg_sync timed db trigger: the date column is not a date, timestamp or timestamptz any more",
                "Recreate the db trigger with a date_column of one of these types.",
            ),
        };
        tz.and_then(|tz| TimestampWithTimeZone::try_from(tz).ok())
    }
}

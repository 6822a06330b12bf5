// Local tables as pg_sync sees them: the `regclass` argument type, the
// '<schema>.<table>' system name and the primary key, cached per backend.
use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable,
};
use pgrx::prelude::*;

use crate::error::*;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;

/// A `regclass` argument. Unlike `PgRelation` it does not open the relation, so a
/// dropped table gives our own clear error instead of an internal one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Regclass(pub pg_sys::Oid);

impl FromDatum for Regclass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            None
        } else {
            // SAFETY: a regclass datum is an oid passed by value.
            unsafe { pg_sys::Oid::from_datum(datum, false) }.map(Regclass)
        }
    }
}

impl IntoDatum for Regclass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

// SAFETY: regclass is a by-value oid, exactly what FromDatum above reads.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Regclass {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(Regclass(pg_sys::InvalidOid))
    }
    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

unsafe impl SqlTranslatable for Regclass {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Regclass);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}

/// What pg_sync needs to know about a local table.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// `<schema>.<table>`, the `system` of its rows in links.
    pub system: String,
    /// Schema name, unquoted.
    pub schema: String,
    pub oid: pg_sys::Oid,
    /// Owner of the table: link checks on its rows run as this role.
    pub owner: pg_sys::Oid,
    /// Attribute numbers of the primary key columns, in key order.
    pub pk_attnums: Vec<i16>,
    /// Quoted, schema-qualified name for use in SQL text.
    pub quoted: String,
    /// Primary key columns in key order: (quoted column name, formatted type). Types are
    /// formatted under a pinned search_path, so any outside pg_catalog come qualified.
    pub pk: Vec<(String, String)>,
    /// The equality operator of each key column, as `OPERATOR(schema.=)`.
    pub pk_eq: Vec<String>,
}

impl TableInfo {
    /// SQL expression giving a row's key as text, as links and jobs store it: the
    /// column's text form, or the record text form `(a,b)` for composite keys.
    pub fn key_text_expr(&self, alias: &str) -> String {
        if self.pk.len() == 1 {
            format!("{alias}.{}::text", self.pk[0].0)
        } else {
            let cols: Vec<String> = self
                .pk
                .iter()
                .map(|(c, _)| format!("{alias}.{c}"))
                .collect();
            format!("ROW({})::text", cols.join(", "))
        }
    }
}

thread_local! {
    static CACHE: RefCell<HashMap<pg_sys::Oid, TableInfo>> = RefCell::new(HashMap::new());
    static CALLBACK_REGISTERED: RefCell<bool> = const { RefCell::new(false) };
}

/// Relcache invalidation: a renamed table or a changed primary key must not keep
/// serving stale names.
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

fn ensure_callback() {
    CALLBACK_REGISTERED.with(|r| {
        if !*r.borrow() {
            // SAFETY: registering a relcache callback is allowed at any time in a backend;
            // `invalidate` only touches our thread-local cache.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(Some(invalidate), pg_sys::Datum::from(0))
            };
            *r.borrow_mut() = true;
        }
    });
}

/// Why a table cannot be used: SQLSTATE, message and hint for `raise`.
pub struct Unusable(PgSqlErrorCode, String, String);

/// Look a table up, raising a clear error when it does not exist, is not a table or
/// has no primary key.
pub fn table_info(rel: Option<Regclass>, what: &str) -> TableInfo {
    let Some(Regclass(oid)) = rel else {
        raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what}: the table must not be NULL"),
            "Pass the local table as 'schema.table'::regclass.",
        )
    };
    match lookup(oid, what) {
        Ok(info) => info,
        Err(Unusable(code, message, hint)) => raise(code, message, hint),
    }
}

/// Same as `table_info` for code that must not fail (triggers): None when the table
/// cannot be used.
pub fn table_info_quiet(oid: pg_sys::Oid) -> Option<TableInfo> {
    lookup(oid, "").ok()
}

fn lookup(oid: pg_sys::Oid, what: &str) -> Result<TableInfo, Unusable> {
    ensure_callback();
    if let Some(info) = CACHE.with(|c| c.borrow().get(&oid).cloned()) {
        return Ok(info);
    }
    let info = load(oid, what)?;
    CACHE.with(|c| c.borrow_mut().insert(oid, info.clone()));
    Ok(info)
}

fn load(oid: pg_sys::Oid, what: &str) -> Result<TableInfo, Unusable> {
    let found = crate::session::with_pinned_search_path(|| {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT n.nspname::text, c.relname::text, c.relkind::text,
                        quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relowner
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = $1",
                    None,
                    &[oid.into()],
                )
                .or_raise("table lookup");
            let mut head = None;
            for row in rows {
                let nsp: String = row.get(1).or_raise("table lookup").unwrap_or_default();
                let rel: String = row.get(2).or_raise("table lookup").unwrap_or_default();
                let kind: String = row.get(3).or_raise("table lookup").unwrap_or_default();
                let quoted: String = row.get(4).or_raise("table lookup").unwrap_or_default();
                let owner: pg_sys::Oid = row
                    .get(5)
                    .or_raise("table lookup")
                    .unwrap_or(pg_sys::InvalidOid);
                head = Some((nsp, rel, kind, quoted, owner));
            }
            // The equality operator of each key column comes from the key's btree operator
            // class and is written schema-qualified, as foreign key checks do: these
            // lookups run as the table's owner and must not pick up an operator from the
            // caller's search_path.
            let pk_rows = client
                .select(
                    "SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnum,
                        'OPERATOR(' || quote_ident(opn.nspname) || '.' || op.oprname || ')'
                 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                 -- indkey and indclass are both 0-based vectors.
                 JOIN pg_opclass oc
                   ON oc.oid = i.indclass[array_position(i.indkey::int2[], a.attnum)]
                 JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopmethod = 403
                                AND ao.amoplefttype = oc.opcintype
                                AND ao.amoprighttype = oc.opcintype AND ao.amopstrategy = 3
                 JOIN pg_operator op ON op.oid = ao.amopopr
                 JOIN pg_namespace opn ON opn.oid = op.oprnamespace
                 WHERE i.indrelid = $1 AND i.indisprimary
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    None,
                    &[oid.into()],
                )
                .or_raise("primary key lookup");
            let mut pk = Vec::new();
            for row in pk_rows {
                let col: String = row
                    .get(1)
                    .or_raise("primary key lookup")
                    .unwrap_or_default();
                let ty: String = row
                    .get(2)
                    .or_raise("primary key lookup")
                    .unwrap_or_default();
                let attnum: i16 = row
                    .get(3)
                    .or_raise("primary key lookup")
                    .unwrap_or_default();
                let eq: String = row
                    .get(4)
                    .or_raise("primary key lookup")
                    .unwrap_or_default();
                pk.push((col, ty, attnum, eq));
            }
            head.map(|h| (h, pk))
        })
    });
    let Some(((nsp, rel, kind, quoted, owner), pk)) = found else {
        return Err(Unusable(
            ERRCODE_UNDEFINED_TABLE,
            format!(
                "{what}: table with oid {} does not exist (was it dropped?)",
                oid.to_u32()
            ),
            "Pass an existing table as 'schema.table'::regclass.".into(),
        ));
    };
    let system = format!("{nsp}.{rel}");
    if !matches!(kind.as_str(), "r" | "p") {
        return Err(Unusable(
            ERRCODE_WRONG_OBJECT_TYPE,
            format!("{what}: \"{system}\" is not a table"),
            "Links and db triggers work on tables with a primary key.".into(),
        ));
    }
    if pk.is_empty() {
        return Err(Unusable(
            ERRCODE_INVALID_TABLE_DEFINITION,
            format!("{what}: table \"{system}\" has no primary key"),
            format!("Add one (ALTER TABLE {quoted} ADD PRIMARY KEY (...)); pg_sync identifies rows by their primary key."),
        ));
    }
    Ok(TableInfo {
        system,
        schema: nsp,
        oid,
        owner,
        pk_attnums: pk.iter().map(|p| p.2).collect(),
        quoted,
        pk_eq: pk.iter().map(|p| p.3.clone()).collect(),
        pk: pk.into_iter().map(|(c, t, _, _)| (c, t)).collect(),
    })
}

/// Split a record literal such as `(1,"a b")` into its fields (None for NULL).
/// Composite keys travel in this text form, the one `ROW(...)::text` produces.
pub fn parse_record_literal(s: &str) -> Option<Vec<Option<String>>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted_field = false;
    let mut in_quotes = false;
    let mut chars = inner.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted_field = true;
            }
            '\\' => cur.push(chars.next()?),
            ',' if !in_quotes => {
                let field = std::mem::take(&mut cur);
                fields.push(if field.is_empty() && !quoted_field {
                    None
                } else {
                    Some(field)
                });
                quoted_field = false;
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return None;
    }
    fields.push(if cur.is_empty() && !quoted_field {
        None
    } else {
        Some(cur)
    });
    Some(fields)
}

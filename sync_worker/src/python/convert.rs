// Values crossing between Python and PostgreSQL. Python arguments become `Param`s that
// encode themselves for the parameter types of the prepared statement; result columns
// decode into `PgValue`s and then into Python objects.
use std::error::Error;
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyDict,
    PyFloat, PyInt, PyList, PyString, PyTime, PyTimeAccess, PyTuple, PyTzInfo, PyTzInfoAccess,
};
use serde_json::Value;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};

type BoxError = Box<dyn Error + Sync + Send>;

/// A Python value on its way to a statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    /// An int beyond 64 bits, as decimal text.
    BigInt(String),
    Float(f64),
    /// A Decimal, as plain decimal text.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    Json(Value),
    /// An aware datetime, in UTC.
    TimestampTz(NaiveDateTime),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Interval {
        micros: i64,
        days: i32,
    },
    Uuid([u8; 16]),
    Array(Vec<Param>),
}

impl Param {
    fn kind(&self) -> &'static str {
        match self {
            Param::Null => "None",
            Param::Bool(_) => "bool",
            Param::Int(_) | Param::BigInt(_) => "int",
            Param::Float(_) => "float",
            Param::Numeric(_) => "Decimal",
            Param::Text(_) => "str",
            Param::Bytes(_) => "bytes",
            Param::Json(_) => "dict",
            Param::TimestampTz(_) | Param::Timestamp(_) => "datetime",
            Param::Date(_) => "date",
            Param::Time(_) => "time",
            Param::Interval { .. } => "timedelta",
            Param::Uuid(_) => "UUID",
            Param::Array(_) => "list",
        }
    }

    /// The JSON form, for json/jsonb parameters.
    fn to_json(&self) -> Result<Value, BoxError> {
        Ok(match self {
            Param::Null => Value::Null,
            Param::Bool(b) => Value::Bool(*b),
            Param::Int(i) => Value::from(*i),
            Param::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or("NaN and infinity cannot be stored in JSON")?,
            Param::BigInt(s) | Param::Numeric(s) => serde_json::from_str(s)?,
            Param::Text(s) => Value::String(s.clone()),
            Param::Json(v) => v.clone(),
            Param::TimestampTz(t) => {
                Value::String(format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.f")))
            }
            Param::Timestamp(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Param::Date(d) => Value::String(d.to_string()),
            Param::Time(t) => Value::String(t.to_string()),
            Param::Uuid(u) => Value::String(uuid_text(u)),
            Param::Array(items) => Value::Array(
                items
                    .iter()
                    .map(Param::to_json)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Param::Bytes(_) | Param::Interval { .. } => {
                return Err(format!("a Python {} cannot be stored in JSON", self.kind()).into())
            }
        })
    }
}

fn mismatch(p: &Param, ty: &Type) -> BoxError {
    format!(
        "a Python {} cannot be sent as PostgreSQL type {ty}; convert the value in Python or cast the placeholder in SQL (e.g. $1::text::{ty})",
        p.kind()
    )
    .into()
}

/// Domains behave as their base type.
fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(base) => base_type(base),
        _ => ty,
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

fn write_json(v: &Value, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    v.to_sql(ty, out)
}

/// json/jsonb from text the caller already wrote as JSON.
fn write_json_text(s: &str, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    if *ty == Type::JSONB {
        out.put_u8(1);
    }
    out.put_slice(s.as_bytes());
    Ok(IsNull::No)
}

fn parse_datetime(s: &str) -> Option<(NaiveDateTime, bool)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.naive_utc(), true));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some((t, false));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some((t.naive_utc(), true));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (t, false))
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let ty = base_type(ty);
        let json = matches!(*ty, Type::JSON | Type::JSONB);
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ if json => write_json(&Value::Bool(*b), ty, out),
                _ if is_text(ty) => (if *b { "true" } else { "false" }).to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)
                    .map_err(|_| format!("{i} is out of range for smallint"))?
                    .to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)
                    .map_err(|_| format!("{i} is out of range for integer"))?
                    .to_sql(ty, out),
                Type::INT8 => i.to_sql(ty, out),
                Type::OID => u32::try_from(*i)
                    .map_err(|_| format!("{i} is out of range for oid"))?
                    .to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::NUMERIC => encode_numeric(&i.to_string(), out),
                _ if json => write_json(&Value::from(*i), ty, out),
                _ if is_text(ty) => i.to_string().as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::BigInt(s) => match *ty {
                Type::NUMERIC => encode_numeric(s, out),
                Type::FLOAT8 => s.parse::<f64>()?.to_sql(ty, out),
                _ if json => write_json_text(s, ty, out),
                _ if is_text(ty) => s.as_str().to_sql(ty, out),
                _ => Err(format!("{s} is out of range for {ty}").into()),
            },
            Param::Float(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::NUMERIC => encode_numeric(&float_text(*f), out),
                _ if json => write_json(&self.to_json()?, ty, out),
                _ if is_text(ty) => float_text(*f).as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Numeric(s) => match *ty {
                Type::NUMERIC => encode_numeric(s, out),
                Type::FLOAT8 => s.parse::<f64>()?.to_sql(ty, out),
                Type::FLOAT4 => s.parse::<f32>()?.to_sql(ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 => match s.parse::<i64>() {
                    Ok(i) => Param::Int(i).to_sql(ty, out),
                    Err(_) => Err(format!("{s} is not an integer").into()),
                },
                _ if json => write_json_text(s, ty, out),
                _ if is_text(ty) => s.as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Text(s) => match *ty {
                _ if is_text(ty) => {
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON | Type::JSONB => write_json_text(s, ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
                    let i: i64 = s
                        .trim()
                        .parse()
                        .map_err(|_| format!("\"{s}\" is not an integer"))?;
                    Param::Int(i).to_sql(ty, out)
                }
                Type::FLOAT4 | Type::FLOAT8 => {
                    let f: f64 = s
                        .trim()
                        .parse()
                        .map_err(|_| format!("\"{s}\" is not a number"))?;
                    Param::Float(f).to_sql(ty, out)
                }
                Type::NUMERIC => encode_numeric(s.trim(), out),
                Type::BOOL => match s.trim().to_ascii_lowercase().as_str() {
                    "t" | "true" | "yes" | "on" | "1" => true.to_sql(ty, out),
                    "f" | "false" | "no" | "off" | "0" => false.to_sql(ty, out),
                    _ => Err(format!("\"{s}\" is not a boolean").into()),
                },
                Type::UUID => {
                    let u = parse_uuid(s).ok_or_else(|| format!("\"{s}\" is not a UUID"))?;
                    out.put_slice(&u);
                    Ok(IsNull::No)
                }
                Type::DATE => {
                    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .map_err(|_| format!("\"{s}\" is not a date (YYYY-MM-DD)"))?;
                    d.to_sql(ty, out)
                }
                Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                    let (t, aware) = parse_datetime(s.trim())
                        .ok_or_else(|| format!("\"{s}\" is not an ISO 8601 date and time"))?;
                    if aware {
                        Param::TimestampTz(t).to_sql(ty, out)
                    } else {
                        Param::Timestamp(t).to_sql(ty, out)
                    }
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Bytes(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Json(v) => match *ty {
                _ if json => write_json(v, ty, out),
                _ if is_text(ty) => v.to_string().as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            // Naive datetimes are taken as UTC (as Odoo stores them).
            Param::TimestampTz(t) | Param::Timestamp(t) => match *ty {
                Type::TIMESTAMPTZ => {
                    DateTime::<Utc>::from_naive_utc_and_offset(*t, Utc).to_sql(ty, out)
                }
                Type::TIMESTAMP => t.to_sql(ty, out),
                Type::DATE => t.date().to_sql(ty, out),
                _ if json => write_json(&self.to_json()?, ty, out),
                _ if is_text(ty) => match self.to_json()? {
                    Value::String(s) => s.as_str().to_sql(ty, out),
                    _ => Err(mismatch(self, ty)),
                },
                _ => Err(mismatch(self, ty)),
            },
            Param::Date(d) => match *ty {
                Type::DATE => d.to_sql(ty, out),
                Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                    Param::Timestamp(d.and_hms_opt(0, 0, 0).ok_or("bad date")?).to_sql(ty, out)
                }
                _ if json => write_json(&self.to_json()?, ty, out),
                _ if is_text(ty) => d.to_string().as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Time(t) => match *ty {
                Type::TIME => t.to_sql(ty, out),
                _ if json => write_json(&self.to_json()?, ty, out),
                _ if is_text(ty) => t.to_string().as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Interval { micros, days } => match *ty {
                Type::INTERVAL => {
                    out.put_i64(*micros);
                    out.put_i32(*days);
                    out.put_i32(0);
                    Ok(IsNull::No)
                }
                _ => Err(mismatch(self, ty)),
            },
            Param::Uuid(u) => match *ty {
                Type::UUID => {
                    out.put_slice(u);
                    Ok(IsNull::No)
                }
                _ if json => write_json(&Value::String(uuid_text(u)), ty, out),
                _ if is_text(ty) => uuid_text(u).as_str().to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Param::Array(items) => match ty.kind() {
                Kind::Array(_) => items.as_slice().to_sql(ty, out),
                _ if json => write_json(&self.to_json()?, ty, out),
                _ => Err(mismatch(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f}")
    }
}

fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .bytes()
        .filter(|c| *c != b'-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------
// numeric: PostgreSQL's binary form is base-10000 digits with a weight and a scale.
// ---------------------------------------------------------------------------------

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

fn encode_numeric(text: &str, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    let special = |sign: u16, out: &mut BytesMut| {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        Ok(IsNull::No)
    };
    match text {
        "NaN" | "nan" => return special(NUMERIC_NAN, out),
        "Infinity" | "inf" | "+Infinity" => return special(NUMERIC_PINF, out),
        "-Infinity" | "-inf" => return special(NUMERIC_NINF, out),
        _ => {}
    }
    let bad = || -> BoxError { format!("\"{text}\" is not a number").into() };
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    let mut digits: Vec<u8> = Vec::with_capacity(int_part.len() + frac_part.len() + 8);
    for c in int_part.bytes().chain(frac_part.bytes()) {
        if !c.is_ascii_digit() {
            return Err(bad());
        }
        digits.push(c - b'0');
    }
    // Position of the decimal point within `digits`.
    let mut point = int_part.len() as i64 + exponent;
    let dscale = (digits.len() as i64 - point).max(0);
    if point < 0 {
        let pad = (-point) as usize;
        digits.splice(0..0, std::iter::repeat_n(0, pad));
        point = 0;
    }
    while (digits.len() as i64) < point {
        digits.push(0);
    }
    // Align the point on a group boundary, then pad the end to whole groups.
    let lead = ((4 - point % 4) % 4) as usize;
    digits.splice(0..0, std::iter::repeat_n(0, lead));
    point += lead as i64;
    while !digits.len().is_multiple_of(4) {
        digits.push(0);
    }
    let mut groups: Vec<i16> = digits
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + *d as i16))
        .collect();
    let mut weight = point / 4 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let dscale = u16::try_from(dscale).map_err(|_| bad())?;
    out.put_i16(i16::try_from(groups.len()).map_err(|_| bad())?);
    out.put_i16(i16::try_from(weight).map_err(|_| bad())?);
    out.put_u16(if negative && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        0
    });
    out.put_u16(dscale);
    for g in groups {
        out.put_i16(g);
    }
    Ok(IsNull::No)
}

fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(8 + 2 * i)? as i64);
    }
    let group = |i: i64| -> i64 {
        if i >= 0 && (i as usize) < digits.len() {
            digits[i as usize]
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(s, "{}", group(i));
            } else {
                let _ = write!(s, "{:04}", group(i));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", group(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------

/// A result column value.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    Json(Value),
    TimestampTz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Interval { micros: i64, days: i32, months: i32 },
    Uuid([u8; 16]),
    Array(Vec<PgValue>),
}

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let ty = base_type(ty);
        Ok(match *ty {
            Type::BOOL => PgValue::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => PgValue::Int(i16::from_sql(ty, raw)? as i64),
            Type::INT4 => PgValue::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT8 => PgValue::Int(i64::from_sql(ty, raw)?),
            Type::OID => PgValue::Int(u32::from_sql(ty, raw)? as i64),
            Type::CHAR => PgValue::Text((i8::from_sql(ty, raw)? as u8 as char).to_string()),
            Type::FLOAT4 => PgValue::Float(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => PgValue::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => PgValue::Numeric(decode_numeric(raw)?),
            Type::JSON | Type::JSONB => PgValue::Json(Value::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => PgValue::TimestampTz(DateTime::<Utc>::from_sql(ty, raw)?),
            Type::TIMESTAMP => PgValue::Timestamp(NaiveDateTime::from_sql(ty, raw)?),
            Type::DATE => PgValue::Date(NaiveDate::from_sql(ty, raw)?),
            Type::TIME => PgValue::Time(NaiveTime::from_sql(ty, raw)?),
            Type::BYTEA => PgValue::Bytes(raw.to_vec()),
            Type::UUID => PgValue::Uuid(raw.try_into().map_err(|_| "bad uuid")?),
            Type::INTERVAL => {
                if raw.len() != 16 {
                    return Err("bad interval".into());
                }
                PgValue::Interval {
                    micros: i64::from_be_bytes(raw[0..8].try_into()?),
                    days: i32::from_be_bytes(raw[8..12].try_into()?),
                    months: i32::from_be_bytes(raw[12..16].try_into()?),
                }
            }
            _ if is_text(ty) => PgValue::Text(String::from_utf8(raw.to_vec())?),
            _ => match ty.kind() {
                Kind::Array(_) => PgValue::Array(Vec::<PgValue>::from_sql(ty, raw)?),
                _ => {
                    return Err(format!(
                        "PostgreSQL type {ty} has no Python conversion; cast the column in the query (e.g. col::text)"
                    )
                    .into())
                }
            },
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(PgValue::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------
// Python side
// ---------------------------------------------------------------------------------

static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static RELATIVEDELTA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn decimal_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    DECIMAL.import(py, "decimal", "Decimal")
}

fn uuid_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    UUID.import(py, "uuid", "UUID")
}

/// Convert a Python query argument.
pub fn param_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Param> {
    let py = obj.py();
    if obj.is_none() {
        return Ok(Param::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Param::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Param::Int(i),
            Err(_) => Param::BigInt(obj.str()?.to_string()),
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Param::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Param::Text(s.to_str()?.to_string()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Param::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Param::Bytes(b.to_vec()));
    }
    if let Ok(dt) = obj.cast::<PyDateTime>() {
        return if dt.get_tzinfo().is_some() {
            let utc = obj.call_method1("astimezone", (PyTzInfo::utc(py)?,))?;
            Ok(Param::TimestampTz(naive_datetime(
                utc.cast::<PyDateTime>()?,
            )?))
        } else {
            Ok(Param::Timestamp(naive_datetime(dt)?))
        };
    }
    if let Ok(d) = obj.cast::<PyDate>() {
        return Ok(Param::Date(
            NaiveDate::from_ymd_opt(d.get_year(), d.get_month() as u32, d.get_day() as u32)
                .ok_or_else(|| PyValueError::new_err("date out of range"))?,
        ));
    }
    if let Ok(t) = obj.cast::<PyTime>() {
        return Ok(Param::Time(naive_time(
            t.get_hour(),
            t.get_minute(),
            t.get_second(),
            t.get_microsecond(),
        )?));
    }
    if let Ok(d) = obj.cast::<PyDelta>() {
        return Ok(Param::Interval {
            micros: d.get_seconds() as i64 * 1_000_000 + d.get_microseconds() as i64,
            days: d.get_days(),
        });
    }
    if obj.is_instance(decimal_type(py)?)? {
        let text = py
            .import("builtins")?
            .getattr("format")?
            .call1((obj, "f"))?
            .extract::<String>()?;
        return Ok(Param::Numeric(text));
    }
    if obj.is_instance(uuid_type(py)?)? {
        let bytes = obj.getattr("bytes")?;
        let bytes = bytes.cast::<PyBytes>()?.as_bytes();
        return Ok(Param::Uuid(bytes.try_into().map_err(|_| {
            PyValueError::new_err("a UUID must have 16 bytes")
        })?));
    }
    if obj.is_instance_of::<PyDict>() {
        return Ok(Param::Json(py_to_json(obj)?));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(param_from_py(&item?)?);
        }
        return Ok(Param::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "cannot pass a Python {} as a query argument; use None, bool, int, float, Decimal, str, bytes, date/datetime/time/timedelta, UUID, dict or list",
        obj.get_type().name()?
    )))
}

fn naive_time(h: u8, m: u8, s: u8, us: u32) -> PyResult<NaiveTime> {
    NaiveTime::from_hms_micro_opt(h as u32, m as u32, s as u32, us)
        .ok_or_else(|| PyValueError::new_err("time out of range"))
}

fn naive_datetime(dt: &Bound<'_, PyDateTime>) -> PyResult<NaiveDateTime> {
    let date = NaiveDate::from_ymd_opt(dt.get_year(), dt.get_month() as u32, dt.get_day() as u32)
        .ok_or_else(|| PyValueError::new_err("date out of range"))?;
    Ok(date.and_time(naive_time(
        dt.get_hour(),
        dt.get_minute(),
        dt.get_second(),
        dt.get_microsecond(),
    )?))
}

/// A Python value as JSON (dicts, lists, scalars; dates as ISO text).
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = if let Ok(s) = k.cast::<PyString>() {
                s.to_str()?.to_string()
            } else if k.is_instance_of::<PyInt>() || k.is_instance_of::<PyFloat>() {
                k.str()?.to_string()
            } else {
                return Err(PyTypeError::new_err(format!(
                    "JSON object keys must be strings, not {}",
                    k.get_type().name()?
                )));
            };
            map.insert(key, py_to_json(&v)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(py_to_json(&item?)?);
        }
        return Ok(Value::Array(items));
    }
    match param_from_py(obj)? {
        Param::Bytes(_) | Param::Interval { .. } => Err(PyTypeError::new_err(format!(
            "a Python {} cannot be stored in JSON",
            obj.get_type().name()?
        ))),
        p => p
            .to_json()
            .map_err(|e| PyValueError::new_err(e.to_string())),
    }
}

/// JSON as Python objects.
pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A result value as a Python object.
pub fn pg_to_py<'py>(py: Python<'py>, v: PgValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        PgValue::Null => py.None().into_bound(py),
        PgValue::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        PgValue::Int(i) => i.into_pyobject(py)?.into_any(),
        PgValue::Float(f) => f.into_pyobject(py)?.into_any(),
        PgValue::Numeric(s) => decimal_type(py)?.call1((s,))?,
        PgValue::Text(s) => PyString::new(py, &s).into_any(),
        PgValue::Bytes(b) => PyBytes::new(py, &b).into_any(),
        PgValue::Json(v) => json_to_py(py, &v)?,
        PgValue::TimestampTz(t) => {
            let n = t.naive_utc();
            py_datetime(py, &n, Some(&PyTzInfo::utc(py)?.to_owned()))?
        }
        PgValue::Timestamp(n) => py_datetime(py, &n, None)?,
        PgValue::Date(d) => {
            use chrono::Datelike;
            PyDate::new(py, d.year(), d.month() as u8, d.day() as u8)?.into_any()
        }
        PgValue::Time(t) => {
            use chrono::Timelike;
            PyTime::new(
                py,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond() / 1000,
                None,
            )?
            .into_any()
        }
        PgValue::Interval {
            micros,
            days,
            months,
        } => {
            let seconds = micros.div_euclid(1_000_000);
            let us = micros.rem_euclid(1_000_000) as i32;
            let extra_days = seconds.div_euclid(86_400);
            let secs = seconds.rem_euclid(86_400) as i32;
            let total_days = i32::try_from(days as i64 + extra_days)
                .map_err(|_| PyValueError::new_err("interval out of range"))?;
            if months == 0 {
                PyDelta::new(py, total_days, secs, us, true)?.into_any()
            } else {
                // Months have no fixed length: dateutil's relativedelta keeps them apart.
                let rd = RELATIVEDELTA.import(py, "dateutil.relativedelta", "relativedelta")?;
                let kwargs = PyDict::new(py);
                kwargs.set_item("months", months)?;
                kwargs.set_item("days", total_days)?;
                kwargs.set_item("seconds", secs)?;
                kwargs.set_item("microseconds", us)?;
                rd.call((), Some(&kwargs))?
            }
        }
        PgValue::Uuid(u) => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("bytes", PyBytes::new(py, &u))?;
            uuid_type(py)?.call((), Some(&kwargs))?
        }
        PgValue::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(pg_to_py(py, item)?)?;
            }
            list.into_any()
        }
    })
}

fn py_datetime<'py>(
    py: Python<'py>,
    n: &NaiveDateTime,
    tz: Option<&Bound<'py, PyTzInfo>>,
) -> PyResult<Bound<'py, PyAny>> {
    use chrono::{Datelike, Timelike};
    Ok(PyDateTime::new(
        py,
        n.year(),
        n.month() as u8,
        n.day() as u8,
        n.hour() as u8,
        n.minute() as u8,
        n.second() as u8,
        n.nanosecond() / 1000,
        tz,
    )?
    .into_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let mut out = BytesMut::new();
        encode_numeric(text, &mut out).expect("encode");
        decode_numeric(&out).expect("decode")
    }

    #[test]
    fn numeric_roundtrips() {
        for (input, want) in [
            ("0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("12345678.9", "12345678.9"),
            ("0.0001", "0.0001"),
            ("0.00012", "0.00012"),
            ("100000000", "100000000"),
            ("-0.5", "-0.5"),
            ("3.14159265358979323846", "3.14159265358979323846"),
            ("1.500", "1.500"),
            ("1e5", "100000"),
            ("1.25E-3", "0.00125"),
            ("10000", "10000"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(roundtrip(input), want, "{input}");
        }
        assert!(encode_numeric("12a", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn uuid_text_roundtrips() {
        let u = parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").expect("uuid");
        assert_eq!(uuid_text(&u), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    }
}

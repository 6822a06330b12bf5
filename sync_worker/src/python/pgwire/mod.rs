// PostgreSQL's binary wire format for the values task code sends and reads: `Param`s
// encode themselves for a prepared statement's parameter types, result columns decode
// into `PgValue`s. No Python here (convert.rs turns these into Python objects).
use std::error::Error;
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};

mod numeric;
use numeric::{decode_numeric, encode_numeric};

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
    pub(crate) fn to_json(&self) -> Result<Value, BoxError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_roundtrips() {
        let u = parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").expect("uuid");
        assert_eq!(uuid_text(&u), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    }
}

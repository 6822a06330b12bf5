// Values crossing between Python and PostgreSQL: Python arguments become `Param`s
// (pgwire.rs encodes them), decoded `PgValue`s and result rows become Python objects,
// and JSON values go both ways.
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyDict,
    PyFloat, PyInt, PyList, PyString, PyTime, PyTimeAccess, PyTuple, PyTzInfo, PyTzInfoAccess,
};
use serde_json::Value;
use tokio_postgres::{Column, Row};

use super::errors::DatabaseError;
pub use super::pgwire::{Param, PgValue};

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

/// Result rows as `(column_names, [row_tuple, ...])`.
pub(crate) fn rows_to_py<'py>(
    py: Python<'py>,
    columns: &[Column],
    rows: Vec<Row>,
) -> PyResult<Bound<'py, PyTuple>> {
    let names = PyTuple::new(py, columns.iter().map(|c| PyString::new(py, c.name())))?;
    let out = PyList::empty(py);
    for row in rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in columns.iter().enumerate() {
            let v: PgValue = row.try_get(i).map_err(|e| {
                let mut msg = format!("column \"{}\": {e}", col.name());
                if let Some(src) = std::error::Error::source(&e) {
                    msg = format!("column \"{}\": {src}", col.name());
                }
                DatabaseError::new_err(msg)
            })?;
            values.push(pg_to_py(py, v)?);
        }
        out.append(PyTuple::new(py, values)?)?;
    }
    PyTuple::new(py, [names.into_any(), out.into_any()])
}

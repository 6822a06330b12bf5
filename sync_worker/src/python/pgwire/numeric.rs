// numeric in PostgreSQL's binary form (base-10000 digits with a weight and a scale),
// to and from the decimal text Python's Decimal reads and writes.
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::IsNull;

use super::BoxError;

// ---------------------------------------------------------------------------------
// numeric: PostgreSQL's binary form is base-10000 digits with a weight and a scale.
// ---------------------------------------------------------------------------------

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

pub(super) fn encode_numeric(text: &str, out: &mut BytesMut) -> Result<IsNull, BoxError> {
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

pub(super) fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
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
}

// The kinds of value a setting holds, each read the same way from a flag, an environment
// variable, the config file and a built-in default: durations, sizes, addresses, paths.
//
// Each type parses text with `FromStr` (clap's flags and variables use it) and the file
// with `Deserialize`, which also takes TOML numbers or lists where that reads naturally.
use clap::ValueEnum;
use serde::Deserialize;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// How a setting's layers combine: the flag (or its environment variable) first, then
/// the file. The built-in default comes after both (see `define.rs`).
pub trait Layered: Sized {
    fn layer(flag: Option<Self>, file: Option<Self>) -> Option<Self> {
        flag.or(file)
    }
}

/// A switch: its flag or variable can turn it on, not off (`--allow-unsafe-prod` has no
/// value, and clap reports an absent switch as `false`).
impl Layered for bool {
    fn layer(flag: Option<bool>, file: Option<bool>) -> Option<bool> {
        match flag {
            Some(true) => Some(true),
            _ => file.or(flag),
        }
    }
}

impl Layered for String {}
impl Layered for std::path::PathBuf {}
impl Layered for u16 {}
impl Layered for u32 {}
impl Layered for u64 {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Layered for LogFormat {}

/// Where the worker runs; `prod` tightens the startup checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Prod,
    Integration,
    Test,
    Dev,
}

impl Layered for Environment {}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Prod => "prod",
            Environment::Integration => "integration",
            Environment::Test => "test",
            Environment::Dev => "dev",
        }
    }
}

/// A duration: "2s", "500ms", "1h30m", "1d", or a number of seconds (in the file also a
/// TOML number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl Layered for DurationValue {}

impl FromStr for DurationValue {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(DurationValue)
    }
}

/// A file value given as text or as a TOML number (`5` = "5"), parsed like a flag's text.
fn text_or_number<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: FromStr<Err = String>,
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(u64),
        Float(f64),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Text(t) => t,
        Raw::Int(n) => n.to_string(),
        Raw::Float(f) => f.to_string(),
    };
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_or_number(d)
    }
}

/// A size in bytes: "10MiB", "512KiB", "1MB", or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeValue(pub usize);

impl Layered for SizeValue {}

impl FromStr for SizeValue {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(SizeValue)
    }
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_or_number(d)
    }
}

/// An address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl Layered for Listen {}

impl FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_listen(text)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Directories searched in order: one `:`-separated string, or in the file also a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathList(pub String);

impl Layered for PathList {}

impl FromStr for PathList {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(PathList(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(PathList(match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(":"),
        }))
    }
}

/// The longest duration a setting takes (about 31 years): longer is surely a mistake.
const LONGEST: Duration = Duration::from_secs(1_000_000_000);

/// A duration as `humantime` writes it (`500ms`, `2s`, `5m`, `1h30m`, `1d`), a plain
/// number of seconds, or one decimal number with a unit (`1.5s`, `0.5h`), which older
/// config files and the executors' arguments use.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let parsed = humantime::parse_duration(t)
        .ok()
        .or_else(|| decimal_duration(t))
        .ok_or_else(|| {
            format!("`{text}` is not a duration (examples: 500ms, 2s, 5m, 1h30m, 1d)")
        })?;
    if parsed > LONGEST {
        return Err(format!(
            "`{text}` is out of range (at most {}s)",
            LONGEST.as_secs()
        ));
    }
    Ok(parsed)
}

/// `2`, `1.5`, `1.5s`, `0.25ms`, `0.5m`, `0.5h`, `0.5d`: what `humantime` does not read.
fn decimal_duration(t: &str) -> Option<Duration> {
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// `10MiB`, `512KiB`, `1MB`, `2048` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 10MiB, 512KiB, 1000000)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    value
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `127.0.0.1:8780`, `[::1]:8780`, `0.0.0.0:0` (any free port) or `off`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let t = text.trim();
    if matches!(t, "off" | "none" | "false" | "") {
        return Ok(Listen(None));
    }
    let t = t
        .strip_prefix("localhost:")
        .map_or_else(|| t.to_string(), |port| format!("127.0.0.1:{port}"));
    t.parse::<SocketAddr>().map(|a| Listen(Some(a))).map_err(|_| {
        format!("`{text}` is not an address to listen on (examples: 127.0.0.1:8780, 0.0.0.0:8780, [::1]:8780, off)")
    })
}

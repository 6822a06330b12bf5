// The `settings!` macro: each setting, declared once in settings.rs, becomes its flag and
// environment variable, its key in the file, its field of `Config`, its step of the
// merge, and its row in `SETTINGS`, the table that --help, --print-config and the docs
// are written from.
//
// A setting is `name: Type = DEFAULT { env, value, clap, note, example, suggested,
// replaces, into }` under a `section`. DEFAULT is a TOML literal (`500`, `"1s"`), `unset "what that means"`
// or `required`. `into: field: FieldType = rule` names its field of `Config` and the
// rule (checks.rs) that turns the chosen value into it, or says why the value is refused.
// `replaces: old: OldType { env, unit, into: rule }` keeps a setting's old name (its key,
// flag and variable) working for one release: the rule turns the old value into the new
// type, the worker logs a deprecation warning at start, and giving both is refused.

/// What a setting is when neither a flag, a variable nor the file gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A TOML literal, parsed as the file's value would be.
    Value(&'static str),
    /// No value; the text says what that means (Markdown).
    Unset(&'static str),
    /// No value: the worker refuses to start. (No setting is required today.)
    #[allow(dead_code)]
    Required,
}

/// One setting, as --help, --print-config and docs/configuration.md show it.
#[derive(Debug)]
pub struct Setting {
    pub key: &'static str,
    pub section: &'static str,
    pub env: &'static str,
    /// What the flag takes (`N`, `D`, `URL`...); none for a switch.
    pub value_name: Option<&'static str>,
    /// One sentence (Markdown): --help shows it, the docs and the example too.
    pub doc: &'static str,
    /// More for the docs and the example (Markdown).
    pub note: Option<&'static str>,
    pub default: Fallback,
    /// A TOML literal shown commented out in the example.
    pub example: Option<&'static str>,
    /// A TOML literal the example sets (its values for production).
    pub suggested: Option<&'static str>,
    /// The deprecated setting this one replaces.
    pub replaces: Option<Replaced>,
}

/// A setting's old name, read for one more release.
#[derive(Debug)]
pub struct Replaced {
    pub key: &'static str,
    pub env: &'static str,
    /// What its value was (Markdown), e.g. "a number of milliseconds".
    pub was: &'static str,
}

impl Replaced {
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// A setting's value, given under its new name or its old one (not both); the old one
/// adds a deprecation warning to `warnings`.
pub fn replaced<T>(
    new: &'static str,
    chosen: Option<T>,
    old: Option<T>,
    warnings: &mut Vec<String>,
) -> Result<Option<T>, super::ConfigError> {
    let Some(was) = setting(new).and_then(|s| s.replaces.as_ref()) else {
        return Ok(chosen);
    };
    match (chosen, old) {
        (Some(_), Some(_)) => Err(super::invalid(
            new,
            format!(
                "both `{new}` and its deprecated old name `{}` are set: keep `{new}` only",
                was.key
            ),
        )),
        (None, Some(value)) => {
            warnings.push(deprecation(was.key, was.flag(), was.env, new));
            Ok(Some(value))
        }
        (chosen, None) => Ok(chosen),
    }
}

/// The warning for a deprecated name that was used.
fn deprecation(old: &str, old_flag: String, old_env: &str, new: &str) -> String {
    let (flag, env) = setting(new).map_or((String::new(), ""), |s| (s.flag(), s.env));
    format!(
        "`{old}` ({old_flag}, {old_env}) is deprecated and will be removed in the next \
         release: use `{new}` ({flag}, {env}) instead"
    )
}

impl Setting {
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// The setting named `key`.
pub fn setting(key: &str) -> Option<&'static Setting> {
    super::settings::SETTINGS.iter().find(|s| s.key == key)
}

/// A built-in default, read as the file would read it.
pub fn builtin<T: serde::de::DeserializeOwned>(
    key: &'static str,
    literal: &'static str,
) -> Result<T, super::ConfigError> {
    toml::de::ValueDeserializer::parse(literal)
        .and_then(T::deserialize)
        .map_err(|e| super::invalid(key, format!("built-in default {literal}: {e}")))
}

macro_rules! settings {
    (@fallback required; $ty:ident; $name:ident; $chosen:ident) => {
        $chosen.ok_or($crate::config::ConfigError::Missing {
            key: stringify!($name),
        })
    };
    (@fallback unset $text:literal; $ty:ident; $name:ident; $chosen:ident) => {
        Ok::<Option<$ty>, $crate::config::ConfigError>($chosen)
    };
    (@fallback $literal:literal; $ty:ident; $name:ident; $chosen:ident) => {
        match $chosen {
            Some(value) => Ok(value),
            None => {
                $crate::config::define::builtin::<$ty>(stringify!($name), stringify!($literal))
            }
        }
    };
    (@some) => {
        None
    };
    (@some $value:expr) => {
        Some($value)
    };
    (@meta required) => {
        $crate::config::define::Fallback::Required
    };
    (@meta unset $text:literal) => {
        $crate::config::define::Fallback::Unset($text)
    };
    (@meta $literal:literal) => {
        $crate::config::define::Fallback::Value(stringify!($literal))
    };
    ($(
        section $section:literal;
        $(
            $(#[doc = $doc:literal])+
            $name:ident: $ty:ident = $default:tt $($unset:literal)? {
                env: $env:literal,
                $(value: $value_name:literal,)?
                $(clap: [$($clap:meta),* $(,)?],)?
                $(note: $note:literal,)?
                $(example: $example:tt,)?
                $(suggested: $suggested:tt,)?
                $(replaces: $old:ident: $old_ty:ident {
                    env: $old_env:literal,
                    was: $old_was:literal,
                    into: $old_rule:expr $(,)?
                },)?
                into: $field:ident: $field_ty:ty = $rule:expr $(,)?
            }
        )+
    )+) => {
        /// The settings' flags and their environment variables. None has a default in
        /// clap: it would hide the file's value.
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct SettingFlags {
            $($(
                #[arg(
                    long,
                    env = $env,
                    help = $crate::config::render::flag_help(stringify!($name))
                    $(, value_name = $value_name)?
                    $($(, $clap)*)?
                )]
                pub $name: Option<$ty>,
                $(
                    #[arg(long, env = $old_env, hide = true)]
                    pub $old: Option<$old_ty>,
                )?
            )+)+
        }

        /// The config file: the same settings, keyed by name; any other key is refused.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct SettingsFile {
            $($(
                pub $name: Option<$ty>,
                $(pub $old: Option<$old_ty>,)?
            )+)+
        }

        /// Settings of a running worker, checked.
        #[derive(Debug, Clone)]
        pub struct Config {
            /// The TOML file the settings came from, if any.
            pub file: Option<std::path::PathBuf>,
            /// Deprecated names that were used, as warnings to log at start.
            pub deprecations: Vec<String>,
            $($(
                $(#[doc = $doc])+
                pub $field: $field_ty,
            )+)+
        }

        pub static SETTINGS: &[$crate::config::define::Setting] = &[$($(
            $crate::config::define::Setting {
                key: stringify!($name),
                section: $section,
                env: $env,
                value_name: settings!(@some $($value_name)?),
                doc: concat!($($doc),+),
                note: settings!(@some $($note)?),
                default: settings!(@meta $default $($unset)?),
                example: settings!(@some $(stringify!($example))?),
                suggested: settings!(@some $(stringify!($suggested))?),
                replaces: settings!(@some $($crate::config::define::Replaced {
                    key: stringify!($old),
                    env: $old_env,
                    was: $old_was,
                })?),
            },
        )+)+];

        /// Each setting from its flag (or variable), else the file, else its default,
        /// then checked by its rule.
        pub fn merge(
            flags: &SettingFlags,
            file: SettingsFile,
            path: Option<std::path::PathBuf>,
            mut deprecations: Vec<String>,
        ) -> Result<Config, $crate::config::ConfigError> {
            $($(
                let $field: $field_ty = {
                    let chosen = <$ty as $crate::config::values::Layered>::layer(
                        flags.$name.clone(),
                        file.$name,
                    );
                    $(
                        let old = <$old_ty as $crate::config::values::Layered>::layer(
                            flags.$old.clone(),
                            file.$old,
                        )
                        .map($old_rule);
                        let chosen = $crate::config::define::replaced(
                            stringify!($name),
                            chosen,
                            old,
                            &mut deprecations,
                        )?;
                    )?
                    let value = settings!(@fallback $default $($unset)?; $ty; $name; chosen)?;
                    ($rule)(value).map_err(|why| $crate::config::invalid(stringify!($name), why))?
                };
            )+)+
            Ok(Config {
                file: path,
                deprecations,
                $($($field,)+)+
            })
        }
    };
}

pub(super) use settings;

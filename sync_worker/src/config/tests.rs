// Tests of the settings: values, precedence, errors naming the setting, and that
// contrib/worker.toml and the docs' table are what `sync_worker --print-config` writes.
use super::values::{parse_listen, parse_size, Listen};
use super::*;
use clap::{CommandFactory, Parser};
use std::sync::Mutex;

/// Held by the tests that set or read an environment variable of a setting.
static ENV: Mutex<()> = Mutex::new(());

fn args(list: &[&str]) -> WorkerArgs {
    let mut all = vec!["sync_worker"];
    all.extend_from_slice(list);
    Flags::try_parse_from(all).expect("parse").worker
}

fn file(text: &str) -> SettingsFile {
    parse_file(text).expect("toml")
}

fn url() -> WorkerArgs {
    args(&["--database-url", "postgres://a@h/db"])
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1h 30m 5s"), Ok(Duration::from_secs(5405)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("0.05s"), Ok(Duration::from_millis(50)));
    assert_eq!(parse_duration("0.5d"), Ok(Duration::from_secs(43200)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("abc").is_err());
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("-1s").is_err());
    let e = parse_duration("100000000000s").unwrap_err();
    assert!(e.contains("out of range"), "{e}");
    let e = parse_duration("soon").unwrap_err();
    assert!(e.contains("1h30m"), "the error shows examples: {e}");
}

#[test]
fn durations_read_days_and_compound_values_from_every_layer() {
    let _env = ENV.lock();
    std::env::set_var("SYNC_WORKER_GRACE_PERIOD", "1m30s");
    let flags = args(&[
        "--database-url",
        "postgres://a@h/db",
        "--poll-interval",
        "1h30m",
    ]);
    std::env::remove_var("SYNC_WORKER_GRACE_PERIOD");
    let cfg = Config::merge(
        &flags,
        file("soft_time_limit = '1d'\nhard_time_limit = '1d 1h'\nthrottle = '250ms'"),
        None,
    )
    .expect("config");
    assert_eq!(cfg.poll_interval, Duration::from_secs(5400));
    assert_eq!(cfg.grace_period, Duration::from_secs(90));
    assert_eq!(cfg.soft_time_limit, Duration::from_secs(86400));
    assert_eq!(cfg.hard_time_limit, Duration::from_secs(90000));
    assert_eq!(cfg.throttle, Duration::from_millis(250));
    assert!(cfg.deprecations.is_empty(), "{:?}", cfg.deprecations);
}

#[test]
fn old_names_still_work_for_a_release_with_a_warning_and_both_are_refused() {
    let _env = ENV.lock();
    // The old integer settings, in the file, as flags and as variables.
    let cfg = Config::merge(
        &url(),
        file("throttle_ms = 20\nmax_time_drift_ms = 1500"),
        None,
    )
    .expect("config");
    assert_eq!(cfg.throttle, Duration::from_millis(20));
    assert_eq!(cfg.max_time_drift, Duration::from_millis(1500));
    assert_eq!(cfg.deprecations.len(), 2, "{:?}", cfg.deprecations);
    assert!(
        cfg.deprecations[0].starts_with(
            "`throttle_ms` (--throttle-ms, SYNC_WORKER_THROTTLE_MS) is deprecated and will be \
             removed in the next release: use `throttle` (--throttle, SYNC_WORKER_THROTTLE)"
        ),
        "{:?}",
        cfg.deprecations
    );
    assert!(cfg.deprecations[1].starts_with("`max_time_drift_ms` "));
    std::env::set_var("SYNC_WORKER_MAX_TIME_DRIFT_MS", "70");
    std::env::set_var("SYNC_EVAL_CONTEXT_PATH", "/old");
    let flags = args(&["--database-url", "postgres://a@h/db", "--throttle-ms", "30"]);
    std::env::remove_var("SYNC_WORKER_MAX_TIME_DRIFT_MS");
    std::env::remove_var("SYNC_EVAL_CONTEXT_PATH");
    let cfg = Config::merge(&flags, SettingsFile::default(), None).expect("config");
    assert_eq!(cfg.throttle, Duration::from_millis(30));
    assert_eq!(cfg.max_time_drift, Duration::from_millis(70));
    assert_eq!(cfg.eval_context_path.as_deref(), Some("/old"));
    assert_eq!(cfg.deprecations.len(), 3, "{:?}", cfg.deprecations);
    assert!(cfg.deprecations[0].starts_with("SYNC_EVAL_CONTEXT_PATH is deprecated"));

    // Both names, wherever each comes from, is an error naming both.
    let e = Config::merge(&url(), file("throttle = '1s'\nthrottle_ms = 5"), None).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "throttle: both `throttle` and its deprecated old name `throttle_ms` are set"
        ),
        "{e}"
    );
    let flags = args(&[
        "--database-url",
        "postgres://a@h/db",
        "--max-time-drift",
        "2s",
    ]);
    let e = Config::merge(&flags, file("max_time_drift_ms = 5"), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("`max_time_drift` and its deprecated old name `max_time_drift_ms`"),
        "{e}"
    );
    std::env::set_var("SYNC_EVAL_CONTEXT_PATH", "/old");
    std::env::set_var("SYNC_WORKER_EVAL_CONTEXT_PATH", "/new");
    let flags = url();
    std::env::remove_var("SYNC_EVAL_CONTEXT_PATH");
    std::env::remove_var("SYNC_WORKER_EVAL_CONTEXT_PATH");
    let e = Config::merge(&flags, SettingsFile::default(), None).unwrap_err();
    assert!(
        e.to_string().contains(
            "SYNC_WORKER_EVAL_CONTEXT_PATH (or --eval-context-path) and \
             its deprecated old name SYNC_EVAL_CONTEXT_PATH are set"
        ),
        "{e}"
    );

    // The new names alone warn about nothing; the docs name the old ones.
    let cfg = Config::merge(&url(), file("throttle = '1s'"), None).expect("config");
    assert!(cfg.deprecations.is_empty());
    let table = render::markdown();
    assert!(
        table.contains(
            "Deprecated old name: `throttle_ms` (`--throttle-ms`, `SYNC_WORKER_THROTTLE_MS`)"
        ),
        "{table}"
    );
}

#[test]
fn python_path_takes_existing_directories() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let dir = std::env::temp_dir();
    let text = format!(
        "python_path = ['{}', '/usr/lib/python3/dist-packages']",
        dir.display()
    );
    let cfg = Config::merge(&url(), file(&text), None).expect("config");
    assert_eq!(
        cfg.python_path,
        Some(format!("{}:/usr/lib/python3/dist-packages", dir.display()))
    );
    let e = Config::merge(&url(), file("python_path = '/nonexistent/venv'"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "python_path: /nonexistent/venv is not a directory"
    );
}

#[test]
fn sizes_and_addresses() {
    assert_eq!(parse_size("10MiB"), Ok(10 << 20));
    assert_eq!(parse_size("512kib"), Ok(512 << 10));
    assert_eq!(parse_size("1MB"), Ok(1_000_000));
    assert_eq!(parse_size("42"), Ok(42));
    assert!(parse_size("ten").is_err());
    assert!(parse_size("5 parsecs").is_err());
    assert_eq!(parse_listen("off"), Ok(Listen(None)));
    assert_eq!(
        parse_listen("localhost:80"),
        Ok(Listen(Some(([127, 0, 0, 1], 80).into())))
    );
    assert!(parse_listen("[::1]:9").is_ok());
    assert!(parse_listen("example.com:80").is_err());
    assert!(parse_listen("127.0.0.1").is_err());
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let _env = ENV.lock();
    let cfg = Config::merge(&url(), SettingsFile::default(), None).expect("config");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(cfg.executors, cores);
    assert_eq!(cfg.batch_size, 500);
    assert_eq!(cfg.poll_interval, Duration::from_secs(1));
    assert_eq!(cfg.soft_time_limit, Duration::from_secs(300));
    assert_eq!(cfg.hard_time_limit, Duration::from_secs(330));
    assert_eq!(cfg.grace_period, Duration::from_secs(30));
    assert_eq!(cfg.rescue_interval, Duration::from_secs(2));
    assert_eq!(cfg.wait_for_database, Duration::ZERO);
    assert_eq!(cfg.log_format, LogFormat::Text);
    assert_eq!(cfg.log_level, None);
    assert_eq!(cfg.environment, Environment::Dev);
    assert!(!cfg.allow_unsafe_prod);
    assert_eq!(cfg.webhook_listen, Some(([127, 0, 0, 1], 8780).into()));
    assert_eq!(cfg.admin_listen, Some(([127, 0, 0, 1], 8781).into()));
    assert_eq!(cfg.admin_token, None);
    assert_eq!(cfg.base_url, None);
    assert_eq!(cfg.max_body_size, 10 << 20);
    assert_eq!(cfg.webhook_executors, 1);
    assert_eq!(cfg.webhook_time_limit, Duration::from_secs(30));
    assert_eq!(cfg.throttle, Duration::ZERO);
    assert_eq!(cfg.max_time_drift, Duration::from_millis(1000));
    assert_eq!(cfg.database_ca_file, None);
    assert_eq!(cfg.eval_context_path, None);
    assert_eq!(cfg.python_path, None);
    assert!(cfg.deprecations.is_empty());
    assert_eq!(cfg.executor_database_url, None);
    assert_eq!(cfg.executor_memory_limit, 2 << 30);
    assert_eq!(cfg.webhook_queue_size, 64);
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let _env = ENV.lock();
    let f = file(
        "database_url = 'postgres://a@file/db'\nbatch_size = 7\npoll_interval = '3s'\n\
         throttle_ms = 20\nwebhook_listen = 'off'\neval_context_path = ['/a', '/b']",
    );
    let cli = args(&["--batch-size", "9", "--database-url", "postgres://a@cli/db"]);
    let cfg = Config::merge(&cli, f, None).expect("config");
    assert_eq!(cfg.database_url, "postgres://a@cli/db");
    assert_eq!(cfg.batch_size, 9);
    assert_eq!(cfg.poll_interval, Duration::from_secs(3));
    assert_eq!(cfg.throttle, Duration::from_millis(20));
    assert_eq!(cfg.webhook_listen, None);
    assert_eq!(cfg.eval_context_path.as_deref(), Some("/a:/b"));
    assert_eq!(cfg.grace_period, Duration::from_secs(30));
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let _env = ENV.lock();
    let pick = |list: &[&str], env: Option<&str>, text: &str| {
        let var = "SYNC_WORKER_RESCUE_INTERVAL";
        match env {
            Some(v) => std::env::set_var(var, v),
            None => std::env::remove_var(var),
        }
        let mut all = vec!["--database-url", "postgres://a@h/db"];
        all.extend_from_slice(list);
        let flags = args(&all);
        std::env::remove_var(var);
        let cfg = Config::merge(&flags, file(text), None).expect("config");
        cfg.rescue_interval.as_secs()
    };
    let in_file = "rescue_interval = 5";
    assert_eq!(pick(&[], None, ""), 2, "the default");
    assert_eq!(pick(&[], None, in_file), 5, "the file over the default");
    assert_eq!(
        pick(&[], Some("7s"), in_file),
        7,
        "the variable over the file"
    );
    let flag = ["--rescue-interval", "9s"];
    assert_eq!(
        pick(&flag, Some("7s"), in_file),
        9,
        "the flag over the variable"
    );
}

#[test]
fn a_switch_is_turned_on_by_its_flag_or_variable_or_else_by_the_file() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let on = |list: &[&str], text: &str| {
        let mut all = vec!["--database-url", "postgres://a@h/db"];
        all.extend_from_slice(list);
        let cfg = Config::merge(&args(&all), file(text), None).expect("config");
        cfg.allow_unsafe_prod
    };
    assert!(!on(&[], ""));
    assert!(on(&[], "allow_unsafe_prod = true"));
    assert!(!on(&[], "allow_unsafe_prod = false"));
    assert!(on(&["--allow-unsafe-prod"], "allow_unsafe_prod = false"));
}

#[test]
fn log_json_is_log_format_json_and_wins() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let cli = args(&[
        "--database-url",
        "postgres://a@h/db",
        "--log-json",
        "--log-format",
        "text",
    ]);
    assert_eq!(cli.log_format(), Some(LogFormat::Json));
    let cfg = Config::merge(&cli, file("log_format = 'text'"), None).expect("config");
    assert_eq!(cfg.log_format, LogFormat::Json);
    let cfg = Config::merge(&url(), file("log_format = 'json'"), None).expect("config");
    assert_eq!(cfg.log_format, LogFormat::Json);
}

#[test]
fn errors_name_the_setting() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let bad = parse_file("poll_interval = 'soon'").expect_err("refused");
    assert!(bad.contains("poll_interval"), "{bad}");
    let e = Config::merge(
        &url(),
        file("hard_time_limit = '10s'\nsoft_time_limit = '20s'"),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("hard_time_limit"), "{e}");
    let e = Config::merge(&url(), file("base_url = 'ftp://x'"), None).unwrap_err();
    assert!(e.to_string().starts_with("base_url: `ftp://x`"), "{e}");
    for (text, says) in [
        ("executors = 0", "executors: must be at least 1"),
        ("executors = 257", "executors: must be at most 256"),
        ("batch_size = 0", "batch_size: must be between 1 and 10000"),
        (
            "webhook_executors = 65",
            "webhook_executors: must be at most 64",
        ),
        (
            "webhook_queue_size = 0",
            "webhook_queue_size: must be at least 1",
        ),
        (
            "poll_interval = 0",
            "poll_interval: must be longer than zero",
        ),
        (
            "max_body_size = 0",
            "max_body_size: must be larger than zero",
        ),
        (
            "executor_memory_limit = '1MiB'",
            "executor_memory_limit: must be at least 256MiB",
        ),
        ("admin_token = ' '", "admin_token: is empty"),
        (
            "admin_token = 'short'",
            "admin_token: is shorter than 16 characters",
        ),
        (
            "log_level = 'sync_worker=loud'",
            "log_level: `sync_worker=loud`",
        ),
        (
            "database_ca_file = '/nonexistent/ca.pem'",
            "database_ca_file: /nonexistent/ca.pem is not a readable file",
        ),
        (
            "executor_database_url = 'postgres://a@h/db?sslmode=sometimes'",
            "executor_database_url: not a valid PostgreSQL URL",
        ),
        (
            "webhook_listen = '127.0.0.1:9'\nadmin_listen = '127.0.0.1:9'",
            "admin_listen: 127.0.0.1:9 is also webhook_listen",
        ),
    ] {
        let e = Config::merge(&url(), file(text), None).unwrap_err();
        assert!(e.to_string().starts_with(says), "{text}: {e}");
    }
    // Without a URL and without libpq's variables (the test runs without PGHOST...).
    let e = Config::merge(&args(&[]), SettingsFile::default(), None).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("database_url: database_url is not set and no PGHOST")
            && text.contains("give --database-url, DATABASE_URL or `database_url` in the config file, e.g. postgres://"),
        "{e}"
    );
}

#[test]
fn webhook_listen_is_off_without_webhook_executors() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let cfg = Config::merge(&url(), file("webhook_executors = 0"), None).expect("config");
    assert_eq!(cfg.webhook_listen, None);
}

#[test]
fn an_unknown_key_is_refused_naming_it_and_the_file() {
    let path =
        std::env::temp_dir().join(format!("sync_worker-{}-unknown.toml", std::process::id()));
    std::fs::write(&path, "batch_size = 5\npol_interval = '1s'\n").expect("write");
    let e = read_file(&path).expect_err("refused");
    let _ = std::fs::remove_file(&path);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("config file {}: ", path.display())),
        "{text}"
    );
    assert!(text.contains("unknown field `pol_interval`"), "{text}");
    assert!(
        text.contains("poll_interval"),
        "the known keys are listed: {text}"
    );
}

/// Every `# key = value` line of the example, uncommented.
fn uncommented(example: &str) -> String {
    let mut out = String::new();
    for line in example.lines() {
        let value_line = line.strip_prefix("# ").filter(|rest| {
            settings::SETTINGS
                .iter()
                .any(|s| rest.starts_with(&format!("{} = ", s.key)))
        });
        out.push_str(value_line.unwrap_or(line));
        out.push('\n');
    }
    out
}

#[test]
fn the_printed_example_parses_and_so_do_its_commented_values() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let example = render::toml();
    parse_file(&example).expect("the example as printed");
    let all = uncommented(&example);
    parse_file(&all).expect("the example with every value uncommented");
    let table: toml::Table = toml::from_str(&all).expect("toml");
    for s in settings::SETTINGS {
        assert!(
            table.contains_key(s.key),
            "the example has no value line for {}",
            s.key
        );
    }
    assert_eq!(table.len(), settings::SETTINGS.len());
    // The values set for production (and the defaults) pass the checks.
    let cfg = Config::merge(&url(), file(&example), None).expect("config");
    assert_eq!(cfg.environment, Environment::Prod);
}

#[test]
fn every_flag_with_a_variable_is_a_setting_and_its_help_shows_the_default() {
    // Flags read the environment, which other tests set.
    let _env = ENV.lock();
    let command = Flags::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_env().is_none() || matches!(id, "config" | "log_json" | "old_eval_context_path")
        {
            continue;
        }
        if arg.is_hide_set() {
            // A deprecated old name, documented with the setting that replaces it.
            assert!(
                settings::SETTINGS
                    .iter()
                    .any(|s| s.replaces.as_ref().is_some_and(|r| r.key == id)),
                "--{id} is hidden but replaces no setting"
            );
            continue;
        }
        assert!(define::setting(id).is_some(), "--{id} is not in SETTINGS");
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(help.contains(" [default: "), "--{id}: {help}");
        assert!(!help.contains("]("), "--{id} shows a Markdown link: {help}");
    }
}

const TABLE_BEGIN: &str =
    "<!-- settings table: generated by `sync_worker --print-config=markdown`; do not edit -->";
const TABLE_END: &str = "<!-- end settings table -->";
const REGENERATE: &str =
    "REGENERATE_CONFIG_DOCS=1 cargo test --release -p sync_worker --bins print_config";

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Where two texts first differ, for the failure message.
fn first_difference(have: &str, want: &str) -> String {
    let (mut h, mut w) = (have.lines(), want.lines());
    for n in 1.. {
        match (h.next(), w.next()) {
            (None, None) => break,
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}: has {a:?}, --print-config writes {b:?}"),
        }
    }
    "only in trailing whitespace".into()
}

#[test]
fn contrib_worker_toml_and_the_docs_table_are_print_config_output() {
    let regenerate = std::env::var_os("REGENERATE_CONFIG_DOCS").is_some();
    let example_path = repo_file("contrib/worker.toml");
    let example = std::fs::read_to_string(&example_path).unwrap_or_default();
    let want = render::toml();
    if regenerate && example != want {
        std::fs::write(&example_path, &want).expect("write contrib/worker.toml");
    } else {
        assert!(
            example == want,
            "contrib/worker.toml is not the output of `sync_worker --print-config` ({}); \
             regenerate it with `cargo run --release -p sync_worker -- --print-config > \
             contrib/worker.toml` or `{REGENERATE}`",
            first_difference(&example, &want)
        );
    }

    let docs_path = repo_file("docs/configuration.md");
    let docs = std::fs::read_to_string(&docs_path).expect("docs/configuration.md");
    let (before, rest) = docs
        .split_once(&format!("{TABLE_BEGIN}\n"))
        .unwrap_or_else(|| panic!("docs/configuration.md has no line `{TABLE_BEGIN}`"));
    let (table, after) = rest
        .split_once(&format!("{TABLE_END}\n"))
        .unwrap_or_else(|| panic!("docs/configuration.md has no line `{TABLE_END}`"));
    let want = render::markdown();
    if regenerate && table != want {
        let text = format!("{before}{TABLE_BEGIN}\n{want}{TABLE_END}\n{after}");
        std::fs::write(&docs_path, text).expect("write docs/configuration.md");
    } else {
        assert!(
            table == want,
            "docs/configuration.md's settings table is not the output of `sync_worker \
             --print-config=markdown` ({}); regenerate it with `{REGENERATE}`",
            first_difference(table, &want)
        );
    }
}

// sync_worker entry point: parses the settings and runs the supervisor (default), one
// executor process (when started by the supervisor itself), or a command.
// The data path, folder by folder: queue/ (claiming, rescue, schedules: the database's
// job queue as the worker uses it) -> supervisor/ (one per worker: dispatch, executor
// slots, webhooks, stop) -> executor/ (one process per slot: batches in one transaction)
// -> python/ (the embedded interpreter and its database bridge). http/ serves webhooks
// and the admin API; the rest are the worker's commands and shared helpers.
mod child_env;
mod cli;
mod code_check;
mod config;
mod console;
mod executor;
mod http;
mod job_state;
mod mask;
mod metrics;
mod pg;
mod project_io;
mod python;
mod queue;
mod run_job;
mod shared;
mod startup;
mod supervisor;
mod systemd;
mod version;
mod webhook_call;

use clap::Parser;
use cli::{Cli, Command};
use config::{Config, LogFormat};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; a bad flag is a
            // configuration error like any other (clap's own code would be 2).
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                startup::EX_CONFIG
            } else {
                0
            });
        }
    };
    if let Some(format) = cli.print_config {
        print!("{}", config::render::print(format));
        return;
    }
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_worker(&cli.worker),
        Command::RunJob(args) => {
            init_tracing(
                log_format(&cli.worker),
                cli.worker.settings.log_level.as_deref(),
            );
            pg::set_default_ca_file(cli.worker.settings.database_ca_file.clone());
            run_job::main(&cli.worker, &args)
        }
        Command::Export(args) => {
            init_tracing(
                log_format(&cli.worker),
                cli.worker.settings.log_level.as_deref(),
            );
            pg::set_default_ca_file(cli.worker.settings.database_ca_file.clone());
            project_io::export_main(cli.worker.settings.database_url.as_deref(), &args)
        }
        Command::Import(args) => {
            init_tracing(
                log_format(&cli.worker),
                cli.worker.settings.log_level.as_deref(),
            );
            pg::set_default_ca_file(cli.worker.settings.database_ca_file.clone());
            project_io::import_main(cli.worker.settings.database_url.as_deref(), &args)
        }
        Command::CheckCode(args) => code_check::main(&args),
        Command::Executor(args) => {
            init_tracing(
                log_format(&cli.worker),
                cli.worker.settings.log_level.as_deref(),
            );
            pg::set_default_ca_file(cli.worker.settings.database_ca_file.clone());
            let index = args.index;
            match executor::main(args) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("executor {index}: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

/// The log format of a command that reads no config file.
fn log_format(args: &config::WorkerArgs) -> LogFormat {
    args.log_format().unwrap_or(LogFormat::Text)
}

fn run_worker(args: &config::WorkerArgs) -> i32 {
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sync_worker: {e}");
            return startup::EX_CONFIG;
        }
    };
    init_tracing(cfg.log_format, cfg.log_level.as_deref());
    config::log_deprecations(&cfg.deprecations);
    pg::set_default_ca_file(cfg.database_ca_file.clone());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sync_worker: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let prepared = match prepare(&cfg, args.check).await {
            Ok(p) => p,
            Err(e) => {
                // One line: plain for people at a terminal, JSON among JSON lines (a
                // log collector must be able to parse them one by one).
                match cfg.log_format {
                    LogFormat::Text => eprintln!("sync_worker: {e}"),
                    LogFormat::Json => tracing::error!("{e}"),
                }
                return e.exit_code();
            }
        };
        let Some((listeners, facts)) = prepared else {
            return 0;
        };
        match supervisor::run(cfg, listeners, facts).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                1
            }
        }
    })
}

/// The startup checks; `None` after a successful `--check`.
async fn prepare(
    cfg: &Config,
    check_only: bool,
) -> Result<Option<(startup::Listeners, startup::DbFacts)>, startup::StartupError> {
    startup::check_environment(cfg)?;
    let listeners = startup::bind(cfg)?;
    let client = startup::connect(cfg).await?;
    let facts = startup::check_database(&client, cfg, check_only).await?;
    startup::report_drift(facts.drift_ms, cfg.max_time_drift);
    if !check_only {
        return Ok(Some((listeners, facts)));
    }
    let addr = |l: &Option<std::net::TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or("off".to_string(), |a| a.to_string())
    };
    println!("sync_worker {}: configuration OK", version::LONG);
    if let Some(file) = &cfg.file {
        println!("  config file        {}", file.display());
    }
    println!("  environment        {}", cfg.environment.as_str());
    println!(
        "  database           reachable, pg_sync {}",
        facts.extension_version
    );
    println!(
        "  clock drift        {:.0} ms (max {} ms)",
        facts.drift_ms,
        cfg.max_time_drift.as_millis()
    );
    println!(
        "  executors          {} for jobs, {} for webhooks",
        cfg.executors, cfg.webhook_executors
    );
    println!(
        "  executor login     {} (checked: no rights of its own)",
        facts
            .executor
            .user
            .clone()
            .unwrap_or_else(|| "from executor_database_url".into())
    );
    println!("  webhook_listen     {}", addr(&listeners.webhook));
    println!("  admin_listen       {}", addr(&listeners.admin));
    println!(
        "  base_url           {}",
        facts.base_url.as_deref().unwrap_or("(not set)")
    );
    println!("  webhook triggers   {} active", facts.webhook_triggers);
    Ok(None)
}

/// The log filter of `log_level`; unset: `RUST_LOG`, else `info`.
fn log_filter(level: Option<&str>) -> tracing_subscriber::EnvFilter {
    level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"))
}

/// Log lines to stderr; the filter stays replaceable for SIGHUP (log_level).
fn init_tracing(format: LogFormat, level: Option<&str>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(level))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            keep_filter_handle(builder.reload_handle());
            builder.init();
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            keep_filter_handle(builder.reload_handle());
            builder.init();
        }
    }
}

fn keep_filter_handle<S: 'static>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) {
    supervisor::reload::on_log_level(move |level| {
        handle.reload(log_filter(level)).map_err(|e| e.to_string())
    });
}

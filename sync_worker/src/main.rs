// sync_worker entry point: parses the command line and runs the supervisor (default) or,
// when started by the supervisor itself, one executor process.
mod batch;
mod claim;
mod config;
mod cron;
mod executor;
mod pg;
mod pool;
mod project_io;
mod protocol;
mod python;
mod registry;
mod rescuer;
mod run_job;
mod shutdown;
mod status;
mod supervisor;

use clap::Parser;
use config::{Cli, Command, Config};

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.worker.log_json);
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_worker(&cli.worker),
        Command::RunJob(args) => run_job::main(cli.worker.database_url.as_deref(), &args),
        Command::Export(args) => project_io::export_main(cli.worker.database_url.as_deref(), &args),
        Command::Import(args) => project_io::import_main(cli.worker.database_url.as_deref(), &args),
        Command::Executor(args) => {
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

fn run_worker(args: &config::WorkerArgs) -> i32 {
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sync_worker: {e}");
            return 2;
        }
    };
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
    match rt.block_on(supervisor::run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

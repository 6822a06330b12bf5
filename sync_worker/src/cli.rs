// The command line: the worker's settings (config/), --print-config, and its subcommands,
// each defined by the command it runs (executor, run-job, export, import,
// check-code).
use crate::config::render::PrintFormat;
use crate::config::WorkerArgs;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sync_worker",
    version = crate::version::LONG,
    about = "pg_sync worker: claims jobs from the database, runs their Python task code, serves webhooks and an admin HTTP API"
)]
pub struct Cli {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Print the example config file (every setting, commented, with its default, flag
    /// and environment variable) and exit; `--print-config=markdown` prints the table of
    /// docs/configuration.md instead.
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "toml"
    )]
    pub print_config: Option<PrintFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker (the default).
    Run,
    /// Internal: one executor process, started by the worker itself.
    #[command(hide = true)]
    Executor(crate::executor::ExecutorArgs),
    /// Debugging: run one job now, in its own transaction, and print the outcome.
    RunJob(crate::run_job::RunJobArgs),
    /// Print a project's definition as a JSON document (`export NAME > FILE`).
    Export(crate::project_io::ExportArgs),
    /// Create a project from a document written by `export` (`--replace`: update it).
    Import(crate::project_io::ImportArgs),
    /// Compile every code layer of a project document (as `export` writes it) without
    /// running it; prints each problem as LAYER:LINE:COLUMN: MESSAGE, exits 1 if any.
    CheckCode(crate::code_check::CheckCodeArgs),
}

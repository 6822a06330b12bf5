// sync_worker entry point: parses the command line and runs the chosen command.
// The real work lives in the modules; this file only wires them together.
mod python;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sync_worker",
    version,
    about = "pg_sync worker: runs jobs, serves webhooks"
)]
struct Cli {
    /// PostgreSQL connection URL of the database with pg_sync.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the worker (the default).
    Run,
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let mut rt = match python::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sync_worker: {e}");
                    std::process::exit(1);
                }
            };
            let _ = &mut rt;
            eprintln!("sync_worker: the job loop is not implemented yet");
            std::process::exit(2);
        }
    }
}

//! `waybill`: the relay and the operators' command line.
//!
//! This file only parses the command line, sets up logging and starts the
//! library code ([`waybill_server::cli`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use waybill_server::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit here with clap's message and code 2.
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries the command's result (often JSON).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| cli.default_log_level().into()),
        )
        .init();
    let mut stdout = std::io::stdout().lock();
    match cli::run(cli, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::error_line(&err));
            ExitCode::FAILURE
        }
    }
}

//! The `quarry` binary: parse the command line, set up logging, hand over to
//! `quarry_host::cli`.
// The binary reports fatal errors on stderr itself; the library never prints.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = quarry_host::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "quarry: --log {:?} is not a valid filter ({e}); using info",
            cli.log
        );
        EnvFilter::new("info")
    });
    quarry_host::cli::log_subscriber(filter, cli.log_format, std::io::stderr).init();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match quarry_host::cli::execute(cli, &mut out, &mut err).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quarry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `kubectl-muster`, the kubectl plugin (`kubectl muster queue|explain|simulate|nodes`). Everything but the exit
//! status lives in [`muster_admission::plugin`].

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use muster_admission::plugin::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok((text, outcome)) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

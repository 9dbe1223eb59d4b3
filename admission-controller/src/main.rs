//! `muster-admission`: Muster's admission server. Flags and wiring live in [`muster_admission::cli`].

use clap::Parser;
use muster_admission::cli::{Args, init_tracing, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format)?;
    run(args).await?;
    Ok(())
}

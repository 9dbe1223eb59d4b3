//! `muster-reconciler`: the drop-in JobSet controller.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ring is the only rustls provider compiled in; install it explicitly so TLS never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    muster_reconciler::cli::run(muster_reconciler::cli::Args::parse()).await
}

//! `muster-gpu-agent`: this node's GPUs, as NVML sees them, published as its GPUNode and as metrics.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ring is the only rustls provider compiled in; install it explicitly so TLS never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    muster_gpu_agent::cli::run(muster_gpu_agent::cli::Args::parse()).await
}

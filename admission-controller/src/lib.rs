//! Muster's admission side. So far: the JobSet admission webhooks (upstream-compatible defaulting and validation)
//! and the TLS server that serves them.
//!
//! Starting the webhook server in-process, e.g. from an integration test:
//!
//! ```no_run
//! # async fn example() -> Result<(), muster_admission::server::ServeError> {
//! use muster_admission::server::{ServeConfig, serve};
//! let server = serve(ServeConfig::loopback()).await?;
//! let url = server.url("/validate-jobset-x-k8s-io-v1alpha2-jobset");
//! let ca_pem = server.ca_pem();
//! // register webhook configurations pointing at `url`, trusting `ca_pem`; dropping `server` stops it.
//! # Ok(()) }
//! ```

pub mod cli;
pub mod features;
pub mod kube_io;
pub mod server;
pub mod tls;
pub mod webhook;

pub use features::FeatureGates;
pub use server::{CertSource, RunningServer, ServeConfig, ServeError, serve};

//! Muster's admission side. So far: the JobSet admission webhooks (upstream-compatible defaulting and validation)
//! and the TLS server that serves them, the gang core, and the scheduling sidecar ([`extender`]; in pod-pinning
//! mode, [`webhook::pod`]) that steers gang pods to their reserved nodes, and the `kubectl-muster` plugin
//! ([`plugin`]).
//!
//! Starting the webhook server in-process, e.g. from an integration test, and registering it with an API server:
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
//! use kube::api::{Api, PostParams};
//! use muster_admission::webhook::config::{mutating_configuration, validating_configuration};
//! use muster_admission::{ServeConfig, serve};
//!
//! // 127.0.0.1:0, a fresh CA and a serving certificate for 127.0.0.1 and localhost.
//! let server = serve(ServeConfig::loopback()).await?;
//! let ca = server.ca_pem().map(str::as_bytes);
//! let target = server.webhook_target();
//! Api::<MutatingWebhookConfiguration>::all(client.clone())
//!     .create(&PostParams::default(), &mutating_configuration(&target, ca))
//!     .await?;
//! Api::<ValidatingWebhookConfiguration>::all(client)
//!     .create(&PostParams::default(), &validating_configuration(&target, ca))
//!     .await?;
//! // ... create JobSets; rejections read `admission webhook "vjobset.kb.io" denied the request: ...`.
//! drop(server); // stops the server and closes its connections
//! # Ok(()) }
//! ```

pub mod admission;
pub mod cli;
pub mod extender;
pub mod features;
pub mod gang;
pub mod kube_io;
pub mod plugin;
pub mod quantity;
pub mod server;
pub mod tls;
pub mod webhook;

pub use features::FeatureGates;
pub use server::{CertSource, RunningServer, ServeConfig, ServeError, serve};

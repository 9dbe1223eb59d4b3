//! Muster's node GPU agent: reads the node's GPUs through NVML and publishes what admission must know —
//! which GPUs are healthy, which are held by pods, which are busy with processes no pod owns — as the node's
//! `GPUNode` and as Prometheus metrics that agree with `nvidia-smi`.
//!
//! Everything that decides is a pure function over plain data and is tested without a GPU or a cluster:
//!
//! - [`inventory`]: what NVML reported, as plain data; bus-id normalisation.
//! - [`driver`]: which driver versions are too old or have broken process reporting.
//! - [`health`]: the XID policy (the device plugin's default ignore list) and the health of each GPU.
//! - [`allocation`]: which pod holds which GPU, from the kubelet's pod-resources view or, without the socket,
//!   from the pods bound to this node.
//! - [`status`]: the `GPUNode` status and its summary {total, healthy, allocated, busy, free}, and whether a
//!   new status is worth writing before the next heartbeat.
//! - [`metrics`]: the metric families and values, with dcgm-exporter's label names.
//!
//! The I/O around them is thin: [`nvml`] (NVML calls, always on blocking threads, and the XID watcher
//! thread), [`podresources`] (a tonic client for the kubelet's unix socket), [`pods`] (a field-selected pod
//! watch), [`publish`] (server-side apply of the `GPUNode`), [`server`] (`/metrics`, `/healthz`, `/readyz`)
//! and [`agent`] (the poll loop that ties them together). [`cli`] is the process.

pub mod agent;
pub mod allocation;
pub mod cli;
pub mod driver;
pub mod health;
pub mod inventory;
pub mod metrics;
pub mod nvml;
pub mod podresources;
pub mod pods;
pub mod publish;
pub mod server;
pub mod status;
pub mod xid;

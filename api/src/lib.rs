//! Muster's wire types, and nothing else: no logic beyond defaults and small accessors.
//!
//! - [`jobset`]: JobSet `jobset.x-k8s.io/v1alpha2`, upstream-compatible field for field.
//! - [`gang`], [`gpunode`]: our own `muster.dev/v1alpha1` resources.
//! - [`extender`]: the kube-scheduler extender JSON protocol.
//! - [`keys`]: label/annotation keys, condition types, reasons and messages.
//! - [`crd`]: the CustomResourceDefinitions generated from these types.

pub mod crd;
pub mod extender;
pub mod gang;
pub mod gpunode;
pub mod jobset;
pub mod keys;

pub use gang::{Gang, GangPhase, GangSpec, GangStatus};
pub use gpunode::{GPUNode, GPUNodeSpec, GPUNodeStatus};
pub use jobset::{JobSet, JobSetSpec, JobSetStatus};

//! Muster's JobSet controller, a drop-in replacement for upstream's.
//!
//! The reconcile is a pipeline: observe (the JobSet and the Jobs it owns by UID) → [`plan`] (a pure function
//! from spec and observed state to actions and a new status) → apply → one status write → events after it.
//! Everything that decides lives in [`plan`] and is tested without an API server; [`controller`] is the thin
//! kube I/O around it.

pub mod cli;
pub mod config;
pub mod controller;
pub mod metrics;
pub mod own_writes;
pub mod plan;

pub use plan::{Action, Event, EventType, FeatureGates, Input, Plan, PlanError, plan};

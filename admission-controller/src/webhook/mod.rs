//! Admission webhooks. The JobSet webhooks reproduce upstream JobSet's `mjobset.kb.io` / `vjobset.kb.io`:
//! pure defaulting and validation in [`jobset`], upstream-exact error rendering in [`field`] and [`names`], and a
//! thin AdmissionReview/HTTP layer in [`review`] and [`http`]. [`pod`] pins gang pods to their reserved nodes in the
//! pod-pinning placement mode.

pub mod config;
pub mod field;
pub mod http;
pub mod jobset;
pub mod json;
pub mod names;
pub mod pod;
pub mod review;

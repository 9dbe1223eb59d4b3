//! Admission webhooks. The JobSet webhooks reproduce upstream JobSet's `mjobset.kb.io` / `vjobset.kb.io`:
//! pure defaulting and validation in [`jobset`], upstream-exact error rendering in [`field`] and [`names`], and a
//! thin AdmissionReview/HTTP layer in [`review`] and [`http`]. [`pod`] serves upstream's pod webhooks `mpod.kb.io` /
//! `vpod.kb.io`: exclusive placement per topology domain ([`exclusive`]) and, in the pod-pinning placement mode, the
//! pinning of gang pods to their reserved nodes.

pub mod config;
pub mod exclusive;
pub mod field;
pub mod http;
pub mod jobset;
pub mod json;
pub mod names;
pub mod pod;
pub mod review;

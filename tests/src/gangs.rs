//! Reading a Gang's status in tests, for use with [`crate::eventually`], and changing a JobSet as a user would.

use std::time::Duration;

use kube::api::PostParams;
use muster_api::JobSet;
use muster_api::gang::{Gang, GangPhase, GangStatus};

use crate::{Result, TestNamespace, eventually};

/// The Gang's status; an error while it or its status does not exist yet.
pub async fn gang_status(ns: &TestNamespace<'_>, name: &str) -> Result<GangStatus, String> {
    let gang = ns.api::<Gang>().get_opt(name).await.map_err(|e| e.to_string())?.ok_or("no Gang yet")?;
    gang.status.ok_or_else(|| "no status yet".to_owned())
}

/// The Gang's status once it is in one of `phases`; otherwise an error naming its phase and reason.
pub async fn gang_in(ns: &TestNamespace<'_>, name: &str, phases: &[GangPhase]) -> Result<GangStatus, String> {
    let status = gang_status(ns, name).await?;
    if phases.contains(&status.phase) { Ok(status) } else { Err(format!("{:?}: {:?}", status.phase, status.reason)) }
}

/// Reads the JobSet `name`, applies `change` and replaces it, as `kubectl edit` would; retried for a minute while the
/// controllers' own writes make the replace conflict.
pub async fn edit_jobset(ns: &TestNamespace<'_>, name: &str, change: impl Fn(&mut JobSet)) -> Result<()> {
    let api = ns.api::<JobSet>();
    eventually(&format!("JobSet {name} edited"), Duration::from_secs(60), || async {
        let mut js = api.get(name).await.map_err(|e| e.to_string())?;
        change(&mut js);
        api.replace(name, &PostParams::default(), &js).await.map(drop).map_err(|e| e.to_string())
    })
    .await
}

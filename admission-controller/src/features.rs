//! Upstream JobSet's feature gates, as far as the webhooks read them.

use std::str::FromStr;

/// The gates of upstream's `pkg/features`, with upstream's defaults (all alpha gates off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates {
    /// Allows `restartStrategy: InPlaceRestart`. Muster's controller does not implement in-place restarts, so the
    /// command line refuses to turn this on; the field exists so the validation rules behind it stay testable.
    pub in_place_restart: bool,
    /// Allows the `RestartJob` and `RestartJobAndIgnoreMaxRestarts` failure-policy actions.
    pub restart_job: bool,
    /// Allows changing `parallelism`/`completions` of Indexed ReplicatedJobs.
    pub elastic_jobset: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureGateError {
    #[error("feature gate {0:?} is not of the form Name=true|false")]
    Malformed(String),
    #[error("unrecognized feature gate: {0}")]
    Unknown(String),
    #[error("feature gate InPlaceRestart cannot be enabled: Muster's controller does not support in-place restarts")]
    InPlaceRestartUnsupported,
    #[error("feature gate TLSOptions is GA and locked to true")]
    TlsOptionsLocked,
}

/// Parses `--feature-gates` in Kubernetes' syntax: `RestartJob=true,ElasticJobSet=false`.
impl FromStr for FeatureGates {
    type Err = FeatureGateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut gates = FeatureGates::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| FeatureGateError::Malformed(item.to_owned()))?;
            let value: bool = value.trim().parse().map_err(|_| FeatureGateError::Malformed(item.to_owned()))?;
            match name.trim() {
                "InPlaceRestart" if value => return Err(FeatureGateError::InPlaceRestartUnsupported),
                "InPlaceRestart" => gates.in_place_restart = false,
                "RestartJob" => gates.restart_job = value,
                "ElasticJobSet" => gates.elastic_jobset = value,
                "TLSOptions" if !value => return Err(FeatureGateError::TlsOptionsLocked),
                "TLSOptions" => {}
                other => return Err(FeatureGateError::Unknown(other.to_owned())),
            }
        }
        Ok(gates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_syntax() {
        assert_eq!("".parse(), Ok(FeatureGates::default()));
        assert_eq!(
            "RestartJob=true, ElasticJobSet=true,TLSOptions=true".parse(),
            Ok(FeatureGates { in_place_restart: false, restart_job: true, elastic_jobset: true })
        );
        assert_eq!("InPlaceRestart=false".parse(), Ok(FeatureGates::default()));
    }

    #[test]
    fn refuses_what_muster_cannot_do() {
        assert_eq!("InPlaceRestart=true".parse::<FeatureGates>(), Err(FeatureGateError::InPlaceRestartUnsupported));
        assert_eq!("TLSOptions=false".parse::<FeatureGates>(), Err(FeatureGateError::TlsOptionsLocked));
        assert_eq!("Nope=true".parse::<FeatureGates>(), Err(FeatureGateError::Unknown("Nope".into())));
        assert_eq!("RestartJob".parse::<FeatureGates>(), Err(FeatureGateError::Malformed("RestartJob".into())));
        assert_eq!("RestartJob=yes".parse::<FeatureGates>(), Err(FeatureGateError::Malformed("RestartJob=yes".into())));
    }
}

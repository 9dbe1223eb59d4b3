//! Per-queue admission settings from a file (`--queues-config`): Kueue's `waitForPodsReady` knobs and the head
//! hold, per queue; queues not named use the command line's defaults.
//!
//! ```yaml
//! queues:
//!   research:
//!     headHoldAfter: 0s          # hold nodes for the head gang at once: strict order
//!     weight: 2                  # its share of the GPUs against other queues' (default 1)
//!     podsReady:
//!       timeout: 10m
//!       recoveryTimeout: 5m      # a running gang that lost readiness; default: timeout; 0s turns it off
//!       backoffBase: 1m
//!       backoffMax: 1h
//!       requeuingLimit: 5        # then the gang is given up (Inadmissible, left suspended)
//!       requeueTimestamp: Creation   # back to its original place (default Eviction: to the back)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::gang::queue::{QueueConfig, RequeueTimestamp};

#[derive(Debug, thiserror::Error)]
pub enum QueuesConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("queue {queue:?}: {field}: {message}")]
    Value { queue: String, field: &'static str, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    queues: BTreeMap<String, QueueFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueueFile {
    head_hold_after: Option<String>,
    weight: Option<u32>,
    pods_ready: Option<PodsReadyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodsReadyFile {
    timeout: Option<String>,
    recovery_timeout: Option<String>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    requeuing_limit: Option<u32>,
    requeue_timestamp: Option<String>,
}

/// Parses Go's duration syntax for the units that make sense here: `90s`, `1m30s`, `1.5h`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 90s, 10m or 1h30m");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Reads the file; each queue's settings start from `default` and override what the file names.
pub fn load(path: &str, default: &QueueConfig) -> Result<BTreeMap<String, QueueConfig>, QueuesConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| QueuesConfigError::Read { path: path.into(), source })?;
    parse(&text, default).map_err(|e| match e {
        QueuesConfigError::Parse { message, .. } => QueuesConfigError::Parse { path: path.into(), message },
        other => other,
    })
}

pub fn parse(text: &str, default: &QueueConfig) -> Result<BTreeMap<String, QueueConfig>, QueuesConfigError> {
    let file: File = serde_saphyr::from_str(text)
        .map_err(|e| QueuesConfigError::Parse { path: String::new(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (queue, q) in file.queues {
        let mut config = default.clone();
        let duration = |field: &'static str, v: &str| {
            parse_duration(v).map_err(|message| QueuesConfigError::Value { queue: queue.clone(), field, message })
        };
        if let Some(v) = &q.head_hold_after {
            config.head_hold_after = duration("headHoldAfter", v)?;
        }
        match q.weight {
            Some(0) => {
                return Err(QueuesConfigError::Value {
                    queue: queue.clone(),
                    field: "weight",
                    message: "must be at least 1".to_owned(),
                });
            }
            Some(w) => config.weight = w,
            None => {}
        }
        if let Some(p) = &q.pods_ready {
            if let Some(v) = &p.timeout {
                config.pods_ready.timeout = duration("podsReady.timeout", v)?;
            }
            if let Some(v) = &p.recovery_timeout {
                config.pods_ready.recovery_timeout = Some(duration("podsReady.recoveryTimeout", v)?);
            }
            if let Some(v) = &p.backoff_base {
                config.pods_ready.backoff_base = duration("podsReady.backoffBase", v)?;
            }
            if let Some(v) = &p.backoff_max {
                config.pods_ready.backoff_max = duration("podsReady.backoffMax", v)?;
            }
            if p.requeuing_limit.is_some() {
                config.pods_ready.requeuing_limit = p.requeuing_limit;
            }
            if let Some(v) = &p.requeue_timestamp {
                config.pods_ready.requeue_timestamp = match v.as_str() {
                    "Eviction" => RequeueTimestamp::Eviction,
                    "Creation" => RequeueTimestamp::Creation,
                    other => {
                        return Err(QueuesConfigError::Value {
                            queue: queue.clone(),
                            field: "podsReady.requeueTimestamp",
                            message: format!("{other:?} is neither Eviction nor Creation"),
                        });
                    }
                };
            }
        }
        out.insert(queue, config);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "5d", "m", "-1s", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queues_override_only_what_they_name() {
        let default = QueueConfig::default();
        let text = "queues:\n  research:\n    headHoldAfter: 0s\n    weight: 3\n    podsReady:\n      timeout: 10m\n      recoveryTimeout: 0s\n      requeuingLimit: 5\n      requeueTimestamp: Creation\n  batch: {}\n";
        let queues = parse(text, &default).expect("parse");
        let research = &queues["research"];
        assert_eq!(research.head_hold_after, Duration::ZERO);
        assert_eq!(research.pods_ready.timeout, Duration::from_secs(600));
        assert_eq!((research.weight, default.weight), (3, 1));
        assert_eq!(research.pods_ready.recovery(), None, "0s turns recovery off");
        assert_eq!(default.pods_ready.recovery(), Some(default.pods_ready.timeout), "the timeout, unless set");
        assert_eq!(research.pods_ready.requeuing_limit, Some(5));
        assert_eq!(research.pods_ready.requeue_timestamp, RequeueTimestamp::Creation);
        assert_eq!(research.pods_ready.backoff_base, default.pods_ready.backoff_base);
        assert_eq!(queues["batch"], default);
    }

    #[test]
    fn mistakes_are_named() {
        let default = QueueConfig::default();
        let unknown = parse("queues:\n  q:\n    podsReady:\n      timout: 1m\n", &default).expect_err("typo");
        assert!(unknown.to_string().contains("timout"), "{unknown}");
        let bad = parse("queues:\n  q:\n    headHoldAfter: soon\n", &default).expect_err("bad duration");
        assert_eq!(bad.to_string(), "queue \"q\": headHoldAfter: \"soon\" is not a duration like 90s, 10m or 1h30m");
        let zero = parse("queues:\n  q:\n    weight: 0\n", &default).expect_err("zero weight");
        assert_eq!(zero.to_string(), "queue \"q\": weight: must be at least 1");
    }
}

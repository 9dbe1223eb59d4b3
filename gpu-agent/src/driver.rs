//! What the driver version means for the agent. NVML's `_v2` memory call (reserved memory split out, as
//! nvidia-smi shows it) and `_v3` process call arrived with R510; drivers 535.43.02 up to (not including)
//! 535.98 wrote a larger process struct through the same `_v3` symbol than the header declares, overrunning
//! the caller's buffer — on those the agent does not read processes at all.

/// The parsed driver version and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverAssessment {
    /// (major, minor, patch) when the version parses.
    pub version: Option<(u32, u32, u32)>,
    /// Whether `nvmlDeviceGetComputeRunningProcesses_v3` is safe to call.
    pub processes_readable: bool,
    /// For the log, once at start.
    pub warnings: Vec<String>,
}

/// First driver with the `_v2` memory and `_v3` process calls.
pub const MIN_MAJOR: u32 = 510;

pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

pub fn assess(version: Option<&str>) -> DriverAssessment {
    let Some(text) = version else {
        return DriverAssessment {
            version: None,
            processes_readable: true,
            warnings: vec!["NVML did not report a driver version".into()],
        };
    };
    let Some(parsed) = parse(text) else {
        return DriverAssessment {
            version: None,
            processes_readable: true,
            warnings: vec![format!("unrecognised driver version {text:?}")],
        };
    };
    let mut warnings = Vec::new();
    let (major, ..) = parsed;
    if major < MIN_MAJOR {
        warnings.push(format!(
            "driver {text} is older than R{MIN_MAJOR}: memory (v2) and processes (v3) are unavailable, so GPUs \
             report no memory and cannot be seen busy"
        ));
    }
    let broken_processes = ((535, 43, 2)..(535, 98, 0)).contains(&parsed);
    if broken_processes {
        warnings.push(format!(
            "driver {text} mis-sizes NVML's process records (fixed in 535.98); processes are not read, so foreign \
             processes cannot make a GPU busy — upgrade the driver"
        ));
    }
    DriverAssessment { version: Some(parsed), processes_readable: !broken_processes, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse("570.124.06"), Some((570, 124, 6)));
        assert_eq!(parse("535.98"), Some((535, 98, 0)));
        assert_eq!(parse("abc"), None);
    }

    #[test]
    fn a_current_driver_is_fine() {
        let a = assess(Some("570.124.06"));
        assert!(a.processes_readable);
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn old_drivers_are_flagged() {
        let a = assess(Some("470.223.02"));
        assert!(a.processes_readable);
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("older than R510"));
    }

    #[test]
    fn the_535_process_struct_window_is_excluded() {
        assert!(assess(Some("535.43.01")).processes_readable);
        assert!(!assess(Some("535.43.02")).processes_readable);
        assert!(!assess(Some("535.86.10")).processes_readable);
        assert!(assess(Some("535.98")).processes_readable);
        assert!(assess(Some("535.104.05")).processes_readable);
    }

    #[test]
    fn unknown_versions_warn_but_do_not_block() {
        assert!(assess(None).processes_readable);
        assert!(!assess(Some("garbage")).warnings.is_empty());
    }
}

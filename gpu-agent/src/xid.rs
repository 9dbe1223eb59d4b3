//! XID numbers and their names, for reasons a person can act on (`XID 79 (GPU has fallen off the bus)`).
//! The names are NVIDIA's, from its XID error catalogue; unknown numbers are reported bare.

/// The device plugin's default: XIDs that are the application's fault, not the GPU's, so they do not mark
/// the GPU unhealthy.
pub const DEFAULT_IGNORED: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// NVML reports 999 when the XID is unknown.
pub const UNKNOWN: u64 = 999;

pub fn name(xid: u64) -> Option<&'static str> {
    Some(match xid {
        13 => "Graphics Engine Exception",
        31 => "GPU memory page fault",
        32 => "Invalid or corrupted push buffer stream",
        43 => "GPU stopped processing",
        45 => "Preemptive cleanup, due to previous errors",
        48 => "Double Bit ECC Error",
        61 => "Internal micro-controller breakpoint/warning",
        62 => "Internal micro-controller halt",
        63 => "ECC page retirement or row remapping recording event",
        64 => "ECC page retirement or row remapper recording failure",
        68 => "Video processor exception",
        69 => "Graphics Engine class error",
        74 => "NVLink Error",
        79 => "GPU has fallen off the bus",
        92 => "High single-bit ECC error rate",
        94 => "Contained ECC error",
        95 => "Uncontained ECC error",
        109 => "Context Switch Timeout Error",
        119 => "GSP RPC Timeout",
        120 => "GSP Error",
        UNKNOWN => "unknown XID",
        _ => return None,
    })
}

/// `XID 79 (GPU has fallen off the bus)`.
pub fn describe(xid: u64) -> String {
    match name(xid) {
        Some(name) => format!("XID {xid} ({name})"),
        None => format!("XID {xid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        assert_eq!(describe(79), "XID 79 (GPU has fallen off the bus)");
        assert_eq!(describe(4242), "XID 4242");
    }
}

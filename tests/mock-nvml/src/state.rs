//! The fake driver's state: the fixture (reloaded when its file changes), the init reference count and the
//! event sets. One `Mutex` guards it all; no export holds it while it sleeps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::abi::{self, Return};
use crate::fixture::{self, Fixture};

/// Where the fixture is read from.
pub const FIXTURE_ENV: &str = "MUSTER_MOCK_NVML_FIXTURE";

pub struct Mock {
    pub fixture: Fixture,
    path: PathBuf,
    /// (modification time, length) of the file the fixture was read from.
    stamp: Option<(SystemTime, u64)>,
    pub sets: HashMap<u64, EventSet>,
    next_set: u64,
    /// Which of the fixture's `xidEvents` have been delivered (each is delivered once, to the first event set
    /// that waits with its GPU registered, as a driver delivers an XID once to its listener).
    pub delivered: Vec<bool>,
}

#[derive(Default)]
pub struct EventSet {
    /// Device index → registered event bits.
    pub registered: HashMap<usize, u64>,
}

struct Global {
    refcount: u32,
    mock: Option<Mock>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global { refcount: 0, mock: None });

fn global() -> MutexGuard<'static, Global> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters to a test.
    GLOBAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn complain(message: &str) {
    eprintln!("muster-mock-nvml: {message}");
}

/// `nvmlInit_v2`: the first init (reference count 0 → 1) reads the fixture afresh, so each process, and each
/// init/shutdown cycle within one, can use a different fixture.
pub fn init() -> Return {
    let mut global = global();
    if global.refcount > 0 {
        global.refcount += 1;
        return abi::SUCCESS;
    }
    let Some(path) = std::env::var_os(FIXTURE_ENV).map(PathBuf::from) else {
        complain(&format!("{FIXTURE_ENV} is not set; behaving as a machine without an NVIDIA driver"));
        return abi::ERROR_DRIVER_NOT_LOADED;
    };
    let (fixture, stamp) = match read_fixture(&path) {
        Ok(loaded) => loaded,
        Err(message) => {
            complain(&message);
            return abi::ERROR_UNKNOWN;
        }
    };
    if let Some(code) = fixture.init_error {
        return code.0;
    }
    global.mock = Some(Mock { fixture, path, stamp, sets: HashMap::new(), next_set: 1, delivered: Vec::new() });
    global.refcount = 1;
    abi::SUCCESS
}

/// `nvmlShutdown`.
pub fn shutdown() -> Return {
    let mut global = global();
    match global.refcount {
        0 => abi::ERROR_UNINITIALIZED,
        1 => {
            global.refcount = 0;
            global.mock = None;
            abi::SUCCESS
        }
        _ => {
            global.refcount -= 1;
            abi::SUCCESS
        }
    }
}

/// Runs `f` on the initialised state, or answers `UNINITIALIZED`.
pub fn with<R>(f: impl FnOnce(&mut Mock) -> Result<R, Return>) -> Result<R, Return> {
    let mut global = global();
    match global.mock.as_mut() {
        Some(mock) => f(mock),
        None => Err(abi::ERROR_UNINITIALIZED),
    }
}

fn read_fixture(path: &PathBuf) -> Result<(Fixture, Option<(SystemTime, u64)>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading fixture {}: {e}", path.display()))?;
    let fixture: Fixture =
        serde_json::from_str(&text).map_err(|e| format!("parsing fixture {}: {e}", path.display()))?;
    for device in &fixture.devices {
        if fixture::parse_bus_id(&device.pci_bus_id).is_none() {
            return Err(format!("fixture {}: bad pciBusId {:?}", path.display(), device.pci_bus_id));
        }
    }
    Ok((fixture, stamp(path)))
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Mock {
    /// Picks up an edited fixture. A file that does not parse (e.g. caught mid-write) is ignored until it does;
    /// tests should replace the file atomically (write elsewhere, then rename).
    pub fn refresh(&mut self) {
        let now = stamp(&self.path);
        if now.is_none() || now == self.stamp {
            return;
        }
        match read_fixture(&self.path) {
            Ok((fixture, stamp)) => {
                self.fixture = fixture;
                self.stamp = stamp;
            }
            Err(message) => complain(&format!("{message} (keeping the previous fixture)")),
        }
    }

    pub fn create_set(&mut self) -> u64 {
        let id = self.next_set;
        self.next_set += 1;
        self.sets.insert(id, EventSet::default());
        id
    }
}

//! Child processes of the harness: spawned so that they die with the test binary, logged to files,
//! stopped by their own pid.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::{Error, Result};

/// How long a component gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct SpawnJob {
    command: Command,
    reply: mpsc::SyncSender<std::io::Result<Child>>,
}

/// Children are forked by one thread that lives as long as the test binary.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Test
/// threads (and tokio workers) come and go while a shared cluster lives on, so forking from them would
/// kill the shared cluster as soon as the test that started it returned. This thread never exits, so
/// the signal fires exactly when the test binary does, however it ends (even SIGKILL).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let spawn_loop = move || {
            for mut job in rx {
                let _ = job.reply.send(job.command.spawn());
            }
        };
        if let Err(e) = std::thread::Builder::new().name("muster-spawner".into()).spawn(spawn_loop) {
            panic!("cannot start the process-spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

fn spawn_tied_to_test_binary(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;

    let parent = rustix::process::getpid();
    // Own process group: a Ctrl-C on the terminal reaches only the test binary, whose exit then takes the
    // children down through the parent-death signal, instead of racing it.
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes two raw syscalls (no allocation,
    // no locks), which is what `pre_exec` requires. This is the one place the crate needs unsafe: a
    // parent-death signal can only be set from inside the child.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died between fork and prctl; then no signal would ever come.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::sync_channel(1);
    let sent =
        spawner().lock().map_err(|_| std::io::Error::other("spawner lock poisoned"))?.send(SpawnJob { command, reply });
    if sent.is_err() {
        return Err(std::io::Error::other("the process-spawner thread is gone"));
    }
    answer.recv().map_err(|_| std::io::Error::other("the process-spawner thread dropped the request"))?
}

/// One running component.
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Process {
    /// Starts `program args...` with stdout and stderr written to `log`. The process gets SIGKILL
    /// when the test binary exits, however that happens.
    pub(crate) fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// [`Process::spawn`] with extra environment variables.
    pub(crate) fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| Error::io("duplicating a log handle", e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = spawn_tied_to_test_binary(command)
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        Ok(Self { name: name.to_owned(), child, log, stopped: false })
    }

    /// Starts a helper that is meant to outlive the test binary (no parent-death signal), in its own
    /// process group, with no output.
    pub(crate) fn spawn_unattached(name: &str, program: &Path, args: &[String]) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        Ok(Self { name: name.to_owned(), child, log: PathBuf::from("/dev/null"), stopped: false })
    }

    /// SIGKILL now, for helpers that hold no state.
    pub(crate) fn kill_now(&mut self) {
        self.stopped = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error describing an unexpected exit, with the end of the log.
    pub(crate) fn exited_error(&self, status: ExitStatus) -> Error {
        Error::Exited {
            component: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: tail_lines(&self.log, 40),
        }
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL. Only ever signals our own child's pid.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of a log file (reading at most its last 256 KiB).
pub(crate) fn tail_lines(path: &Path, n: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > WINDOW {
        let _ = file.seek(SeekFrom::Start(len - WINDOW));
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return format!("(cannot read {})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

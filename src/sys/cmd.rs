//! Running external programs: argv only, never a shell, always with a timeout.
//!
//! Every command is logged at debug level; once a test has called [`clear_history`], commands
//! are also appended to an in-process command log, so it can assert that hostile input reached
//! no program at all. The daemon never keeps that log (up to 1000 strings of resident memory).

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Default time a command may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static KEEP_LOG: AtomicBool = AtomicBool::new(false);

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    /// The program could not be started (not installed, no permission).
    Spawn { argv: String, reason: String },
    /// It ran longer than allowed and was killed.
    Timeout { argv: String, after: Duration },
    /// It exited unsuccessfully; `stderr` is what it said.
    Failed {
        argv: String,
        code: Option<i32>,
        stderr: String,
    },
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Spawn { argv, reason } => write!(f, "cannot run `{argv}`: {reason}"),
            CmdError::Timeout { argv, after } => write!(f, "`{argv}` timed out after {after:?}"),
            CmdError::Failed { argv, code, stderr } => {
                let code = code.map_or_else(|| "a signal".to_string(), |c| c.to_string());
                write!(f, "`{argv}` exited with {code}: {}", stderr.trim())
            }
        }
    }
}

impl std::error::Error for CmdError {}

impl CmdError {
    /// The program's stderr, if it ran and failed.
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// What `ip`, `nft` and `iptables` say when the thing to remove is already gone.
const ABSENT: &[&str] = &[
    "No such file or directory",
    "No such process",
    "does not exist",
    "Bad rule",
    "No chain/target/match",
];

/// `r` without its output, an error that only says the thing is already gone (one of the common
/// messages, or one of `also`, in its stderr) taken as success: removals stay idempotent.
pub fn ignore_absent(r: Result<String, CmdError>, also: &[&str]) -> Result<(), CmdError> {
    match r {
        Err(e) if !ABSENT.iter().chain(also).any(|m| e.stderr().contains(m)) => Err(e),
        _ => Ok(()),
    }
}

/// Runs `argv` and returns its stdout.
pub fn run<S: AsRef<str>>(argv: &[S]) -> Result<String, CmdError> {
    run_full(argv, None, DEFAULT_TIMEOUT)
}

/// Runs `argv` with `input` on its stdin and returns its stdout.
pub fn run_input<S: AsRef<str>>(argv: &[S], input: &str) -> Result<String, CmdError> {
    run_full(argv, Some(input), DEFAULT_TIMEOUT)
}

/// Runs `argv`, feeding `input` if given, killing it after `timeout`.
pub fn run_full<S: AsRef<str>>(
    argv: &[S],
    input: Option<&str>,
    timeout: Duration,
) -> Result<String, CmdError> {
    run_with(argv, input, &[], false, None, timeout)
}

/// [`run_full`] in the working directory `dir` (for programs that take some file names only
/// relative to it).
pub fn run_in<S: AsRef<str>>(
    argv: &[S],
    input: Option<&str>,
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<String, CmdError> {
    run_with(argv, input, &[], false, Some(dir), timeout)
}

/// Runs `argv` with `env` added to our environment, in a process group of its own that is
/// killed as a whole after `timeout` (so a script's children do not outlive it). For programs
/// the owner configured, such as hooks.
pub fn run_env<S: AsRef<str>>(
    argv: &[S],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, CmdError> {
    run_with(argv, None, env, true, None, timeout)
}

fn run_with<S: AsRef<str>>(
    argv: &[S],
    input: Option<&str>,
    env: &[(String, String)],
    own_group: bool,
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<String, CmdError> {
    use std::os::unix::process::CommandExt;
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let line = argv.join(" ");
    record(&line);
    let (program, args) = argv.split_first().expect("argv is never empty");
    let mut command = Command::new(program);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    if own_group {
        command.process_group(0);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CmdError::Spawn {
            argv: line.clone(),
            reason: e.to_string(),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(text.as_bytes());
    }
    // Drain pipes on threads so a chatty program cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = crate::threads::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = crate::threads::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                if own_group {
                    // SAFETY: kill(2) with the negated PID of a group we created; no memory involved.
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(CmdError::Timeout {
                    argv: line,
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                return Err(CmdError::Spawn {
                    argv: line,
                    reason: e.to_string(),
                });
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(CmdError::Failed {
            argv: line,
            code: status.code(),
            stderr,
        })
    }
}

fn record(line: &str) {
    crate::debug!("run: {line}");
    if !KEEP_LOG.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(mut log) = LOG.lock() {
        // Bounded: the log is for tests and diagnostics, not an archive.
        if log.len() >= 1000 {
            log.remove(0);
        }
        log.push(line.to_string());
    }
}

/// The commands run since [`clear_history`] (most recent last, at most 1000).
pub fn history() -> Vec<String> {
    LOG.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Forgets the command history and keeps one from now on (tests call this before the part
/// they observe).
pub fn clear_history() {
    KEEP_LOG.store(true, Ordering::Relaxed);
    if let Ok(mut log) = LOG.lock() {
        log.clear();
    }
}

/// Whether `program` can be found on `PATH`.
pub fn available(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Starts `argv` as a long-running program that outlives this call: stdin from /dev/null,
/// stdout and stderr appended to `log`, in a session of its own (no terminal signals reach it).
/// A thread reaps it when it exits. The argv elements at the indexes in `secret` are written as
/// `***` in our log and command history (they are passwords). Returns its PID.
pub fn spawn_daemon<S: AsRef<str>>(
    argv: &[S],
    secret: &[usize],
    log: &std::path::Path,
) -> Result<u32, CmdError> {
    use std::os::unix::process::CommandExt;
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let shown: Vec<&str> = argv
        .iter()
        .enumerate()
        .map(|(i, a)| if secret.contains(&i) { "***" } else { a })
        .collect();
    let line = shown.join(" ");
    record(&line);
    let spawn_err = |e: std::io::Error| CmdError::Spawn {
        argv: line.clone(),
        reason: e.to_string(),
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    let (program, args) = argv.split_first().expect("argv is never empty");
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // The daemon blocks SIGTERM, SIGINT and SIGHUP in every thread (one thread waits for them);
    // a child inherits that mask, and one that cannot see SIGTERM only dies by SIGKILL.
    // SAFETY: between fork and exec only async-signal-safe calls: sigemptyset, sigprocmask.
    unsafe {
        command.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(spawn_err)?;
    let pid = child.id();
    crate::threads::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// Whether process `pid` is alive and runs a program whose name ends with `program`.
pub fn pid_runs(pid: u32, program: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let exe = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    // A zombie (exited, not yet reaped) has an empty command line.
    !exe.is_empty() && exe.ends_with(program.as_bytes())
}

/// Whether process `pid` runs at all (not exited, not a zombie), whatever program: a child just
/// started by [`spawn_daemon`] shows our own command line until its exec is done, so
/// [`pid_runs`] with the new program's name is false for a moment on a busy machine.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Stops process `pid` if it runs `program`: SIGTERM, then SIGKILL after `grace`.
pub fn stop_pid(pid: u32, program: &str, grace: Duration) {
    if !pid_runs(pid, program) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on a PID we checked runs our program; no memory involved.
    unsafe {
        libc::kill(raw, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pid_runs(pid, program) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if pid_runs(pid, program) {
        // SAFETY: as above.
        unsafe {
            libc::kill(raw, libc::SIGKILL);
        }
    }
}

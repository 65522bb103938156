//! A private PostgreSQL cluster for the tests of many instances sharing one database: its own
//! temporary directory (data, socket, log), a loopback port of its own, one database
//! `resumable`, trust authentication, and a postmaster killed on drop. Never the system's
//! cluster.
//!
//! The binaries are Debian's (`apt-get install postgresql`), under
//! /usr/lib/postgresql/<version>/bin, which is not on PATH; `RESUMABLE_TEST_PG_BIN` names
//! another directory. initdb and postgres refuse to run as root, so when the tests run as root
//! (as in CI) the cluster runs as the `postgres` user the package creates, in a directory it
//! owns.
//!
//! Two ways down: `stop()` is a crash (SIGKILL to the postmaster and every process it started),
//! `stop_immediate()` is PostgreSQL's immediate shutdown (SIGQUIT: no checkpoint, crash
//! recovery at the next start, but the server says goodbye to its clients and cleans up).
//! `start_again()` brings the same cluster back on the same port.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How CI installs PostgreSQL, and the one these tests know.
const INSTALL: &str = "apt-get install -y postgresql";

/// A directory holding initdb, postgres, pg_isready and psql, instead of Debian's.
pub const BIN_ENV: &str = "RESUMABLE_TEST_PG_BIN";

/// The database each cluster is created with, and the one `url()` names.
pub const DATABASE: &str = "resumable";

/// The cluster's superuser (initdb `-U`), whoever runs the tests.
const SUPERUSER: &str = "postgres";

const BINARIES: [&str; 4] = ["initdb", "postgres", "pg_isready", "psql"];

pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    /// The uid and gid the cluster runs as when the tests run as root.
    owner: Option<(u32, u32)>,
    port: u16,
    postmaster: Option<Child>,
    /// Killed by `stop()`: its shared memory segment is left behind for the next start (or
    /// Drop) to remove.
    crashed: bool,
}

impl Postgres {
    /// initdb, start on a free loopback port, wait until it accepts connections, create the
    /// database `resumable`. Panics if PostgreSQL is missing: CI installs it, so a skip would
    /// hide tests.
    pub fn start() -> Postgres {
        let bin = pg_bin();
        let owner = cluster_owner();
        let dir = private_dir(owner);
        let mut pg = Postgres {
            bin,
            dir,
            owner,
            port: 0,
            postmaster: None,
            crashed: false,
        };
        pg.initdb();
        // Free ports are found by binding port 0 and letting go, so another process may take
        // one before the postmaster binds it: then it exits, and we try again on a new port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            pg.port = free_port();
            match pg.spawn_and_wait() {
                Ok(()) => break,
                Err(why) => failures.push(why),
            }
        }
        assert!(
            pg.postmaster.is_some(),
            "postgres did not start:\n{}",
            failures.join("\n---\n")
        );
        pg.try_psql_on("postgres", &format!("CREATE DATABASE {DATABASE}"))
            .unwrap_or_else(|why| panic!("{why}"));
        pg
    }

    fn initdb(&self) {
        let out = self
            .as_owner("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            // Skips only initdb's final flush of the new cluster to disk, a second or more on
            // a busy machine. The server itself runs with fsync on; killing processes never
            // loses the page cache, only an OS crash would, and no test makes one.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Runs the postmaster as our own child (not daemonized by pg_ctl), so that an early exit
    /// (a port taken) is seen at once and the kill needs no pid file; then waits until it
    /// accepts connections (or exits, or 30 s pass).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.postmaster.is_none(), "the postmaster is running");
        // Every process of the cluster is known dead here (`stop()` waits for them), so a
        // pid file left by a crash is stale. PostgreSQL would check that itself, but it takes
        // a live process of its own user with that pid for a running postmaster, and with
        // pid_max at 32768 (as here) another test's postgres may well have it.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("postgres log file");
        let port = self.port.to_string();
        let child = self
            .as_owner("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &port, "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Three server instances with their pools, plus the tests' own sessions.
            .args(["-c", "max_connections=200"])
            .args(["-c", "shared_buffers=16MB"])
            // Dynamic shared memory as files in the data directory rather than in /dev/shm,
            // where a crashed cluster would leave them behind.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("postgres log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.join("postgres").display()));
        self.postmaster = Some(child);
        self.crashed = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.postmaster.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.postmaster = None;
                return Err(format!(
                    "postgres exited ({status}); its log ends:\n{}",
                    self.log_tail()
                ));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.kill_all();
                return Err(format!(
                    "postgres did not accept connections after 30 s; its log ends:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// pg_isready says "accepting connections" (not merely listening while it recovers).
    fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    }

    /// `postgres://postgres@127.0.0.1:PORT/resumable` (trust authentication: no password).
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The server's flags to keep its metadata in this database.
    pub fn server_args(&self) -> Vec<String> {
        vec!["--database-url".to_owned(), self.url()]
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.postmaster.is_some()
    }

    /// A crash: SIGKILL to the postmaster and to every process it started, then waits until
    /// they are all gone. Clients see their connections drop with no goodbye; what was
    /// committed is on disk (fsync is on) and comes back through crash recovery.
    ///
    /// The backends are killed too, not left to notice their postmaster's death: a backend
    /// busy in a query lingers, still attached to the shared memory, and the next start then
    /// refuses ("pre-existing shared memory block is still in use").
    pub fn stop(&mut self) {
        self.kill_all().unwrap_or_else(|why| panic!("{why}"));
    }

    /// PostgreSQL's immediate shutdown (SIGQUIT): the backends end their sessions with an
    /// error, nothing is checkpointed (the next start recovers from the WAL, as after a
    /// crash), and the postmaster exits once all of its processes have.
    pub fn stop_immediate(&mut self) {
        self.shut_down_immediately()
            .unwrap_or_else(|why| panic!("{why}"));
    }

    /// Starts the same cluster again: same port, same data, same database (a running one is
    /// crashed first, as by `stop()`). After a crash this takes a second or more: before it
    /// replays the WAL, PostgreSQL fsyncs every file of the data directory.
    pub fn start_again(&mut self) {
        if self.postmaster.is_some() {
            self.stop();
        }
        if let Err(why) = self.spawn_and_wait() {
            panic!("postgres did not start again: {why}");
        }
    }

    /// Client sessions on the database `resumable`, other than the one asking (autovacuum
    /// workers and other background processes there are not counted).
    pub fn connections(&self) -> u64 {
        let count = self.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{DATABASE}' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ));
        count
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("a count from pg_stat_activity ({e}): {count:?}"))
    }

    /// Runs `sql` in the database `resumable` and returns psql's output (unaligned, tuples
    /// only, `|` between columns, a line per row, no trailing newline); a failure is a panic.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like `psql`, but an error (the server down, a bad statement) is returned.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_on(DATABASE, sql)
    }

    fn try_psql_on(&self, database: &str, sql: &str) -> Result<String, String> {
        let Output {
            status,
            stdout,
            stderr,
        } = self
            .psql_command_on(database)
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.join("psql").display()));
        let stdout = String::from_utf8_lossy(&stdout);
        if status.success() {
            Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
        } else {
            Err(format!(
                "psql -c {sql:?} failed ({status}): {}{stdout}",
                String::from_utf8_lossy(&stderr)
            ))
        }
    }

    /// psql connected to the database `resumable` over TCP, for a session a test holds open
    /// (pipe its stdin) or drives itself.
    pub fn psql_command(&self) -> Command {
        self.psql_command_on(DATABASE)
    }

    fn psql_command_on(&self, database: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={} user={SUPERUSER} dbname={database}",
                self.port
            ))
            // A server that is down or stopped must fail the call, not hang it.
            .env("PGCONNECT_TIMEOUT", "10");
        command
    }

    /// Polls until `check` passes (a count of connections may trail a client's close by a
    /// moment), or panics after 15 s with the last complaint.
    pub async fn wait_for<F>(&self, what: &str, mut check: F)
    where
        F: FnMut(&Postgres) -> Result<(), String>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let why = match check(self) {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {why}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A command from PostgreSQL's directory, run as the cluster's owner, in its directory
    /// (the tests' working directory may be one the owner cannot enter).
    fn as_owner(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin.join(binary));
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            // std drops the supplementary groups too before it sets the uid.
            command.uid(uid).gid(gid);
        }
        command
    }

    fn kill_all(&mut self) -> Result<(), String> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Ok(());
        };
        let pid = postmaster.id() as i32;
        // Stopped, the postmaster cannot start a process we would miss, nor reap a killed
        // child whose pid could then be reused while we watch it.
        signal(pid, libc::SIGSTOP);
        let children = children_of(pid);
        for &(child, _) in &children {
            signal(child, libc::SIGKILL);
        }
        let _ = postmaster.kill();
        let _ = postmaster.wait();
        self.crashed = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive: Vec<i32> = children
                .iter()
                .filter(|&&(child, started)| is_alive(child, started))
                .map(|&(child, _)| child)
                .collect();
            if alive.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres processes {alive:?} still run 30 s after SIGKILL"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn shut_down_immediately(&mut self) -> Result<(), String> {
        let Some(postmaster) = self.postmaster.as_mut() else {
            return Ok(());
        };
        signal(postmaster.id() as i32, libc::SIGQUIT);
        // PostgreSQL itself SIGKILLs a child that ignores SIGQUIT for 5 s.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = postmaster.try_wait() {
                self.postmaster = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill_all()?;
                return Err(format!(
                    "postgres did not exit 30 s after SIGQUIT (killed); its log ends:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After a crash the System V segment (the interlock against two postmasters on one
    /// data directory) outlives the cluster: the next start would remove it, but if there
    /// is none it stays in the kernel until reboot, one per test.
    fn remove_crash_leftovers(&self) {
        let pid_file =
            std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
        // Line 7: the segment's key and id.
        let key = pid_file
            .lines()
            .nth(6)
            .and_then(|line| line.split_whitespace().next())
            .filter(|key| key.parse::<u64>().is_ok_and(|key| key != 0));
        if let Some(key) = key {
            let _ = Command::new("ipcrm")
                .args(["-M", key])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // An immediate shutdown, not a kill: the postmaster removes its shared memory itself.
        if self.shut_down_immediately().is_err() || self.crashed {
            self.remove_crash_leftovers();
        }
    }
}

/// The directory of PostgreSQL's server binaries: `$RESUMABLE_TEST_PG_BIN`, else Debian's
/// newest /usr/lib/postgresql/<version>/bin, else where an `initdb` on PATH really is.
fn pg_bin() -> PathBuf {
    let missing = |dir: &Path| -> Vec<&str> {
        BINARIES
            .into_iter()
            .filter(|name| !dir.join(name).is_file())
            .collect()
    };
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        let lacks = missing(&dir);
        assert!(
            lacks.is_empty(),
            "{BIN_ENV}={} lacks {}",
            dir.display(),
            lacks.join(", ")
        );
        return dir;
    }
    let mut debian: Vec<((u32, u32), PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let mut parts = name.split('.').map(str::parse::<u32>);
                    let major = parts.next()?.ok()?;
                    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
                    Some(((major, minor), entry.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    let newest_debian = debian
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .find(|dir| missing(dir).is_empty());
    let on_path = || {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.is_file())
            // A symlink to Debian's directory counts as that directory.
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
            .filter(|dir| missing(dir).is_empty())
    };
    newest_debian.or_else(on_path).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need PostgreSQL's server binaries ({}) to start their own \
             cluster: install Debian's with `{INSTALL}` (.ci/run does; they go to \
             /usr/lib/postgresql/<version>/bin), or set {BIN_ENV} to their directory",
            BINARIES.join(", ")
        )
    })
}

/// Root cannot run initdb or postgres: then the cluster runs as `postgres`.
fn cluster_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, SUPERUSER])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "as root, the PostgreSQL tests run their cluster as the user `{SUPERUSER}` \
             (initdb refuses root), and there is none: Debian's package creates it \
             (`{INSTALL}`; .ci/run does)"
        ),
    }
}

/// A temporary directory the cluster's owner has, under one it can reach: tempfile makes
/// its directories 0700 for whoever runs the tests, and TMPDIR may be under /root.
fn private_dir(owner: Option<(u32, u32)>) -> TempDir {
    let Some((uid, gid)) = owner else {
        return tempfile::Builder::new()
            .prefix("resumable-pg-")
            .tempdir()
            .expect("temp dir for postgres");
    };
    let base = [std::env::temp_dir(), PathBuf::from("/tmp")]
        .into_iter()
        .find(|base| reachable_by(base, uid, gid))
        .unwrap_or_else(|| {
            panic!(
                "the user `{SUPERUSER}` can reach neither {} nor /tmp: no place for the \
                 test cluster",
                std::env::temp_dir().display()
            )
        });
    let dir = tempfile::Builder::new()
        .prefix("resumable-pg-")
        .tempdir_in(&base)
        .expect("temp dir for postgres");
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {SUPERUSER}: {e}", dir.path().display()));
    dir
}

/// Whether `uid` may enter `dir` and each directory above it (by mode bits, and the user's
/// primary group only).
fn reachable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    dir.ancestors().all(|dir| {
        std::fs::metadata(dir).is_ok_and(|meta| {
            let mode = meta.mode();
            meta.is_dir()
                && if meta.uid() == uid {
                    mode & 0o100 != 0
                } else if meta.gid() == gid {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                }
        })
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: sends a signal to a process of the cluster; no memory is involved.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The processes whose parent is `parent`, each with its start time (to tell it from a later
/// process that gets the same pid).
fn children_of(parent: i32) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = proc_stat(pid)?;
            (stat.ppid == parent).then_some((pid, stat.started))
        })
        .collect()
}

/// Whether the process `pid` started at `started` still runs (a zombie has let go of
/// everything, shared memory included).
fn is_alive(pid: i32, started: u64) -> bool {
    proc_stat(pid).is_some_and(|stat| stat.started == started && stat.state != 'Z')
}

struct ProcStat {
    state: char,
    ppid: i32,
    started: u64,
}

/// /proc/PID/stat: after the command in parentheses (which may hold anything), field 3
/// (state), 4 (ppid) … 22 (start time).
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

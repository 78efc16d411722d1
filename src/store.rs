//! SQLite state: gateways we have seen, the sessions we grant as a gateway, and our own connection.
//!
//! The daemon keeps one [`Store`] (behind a mutex: a connection is `Send` but not `Sync`). Every
//! method is one short statement or transaction, so a crash or power cut leaves either the old or
//! the new state, never half of one, and a restarted gateway still knows whom it has leased which
//! address to.
//!
//! # Layout
//! - [`Store::open`]: creates the directory and file (owner-only: the `kv` table holds WireGuard
//!   private keys), sets the connection pragmas and runs the [migrations](#migrations).
//! - `kv`: small settings, [`Store::get_kv`] / [`Store::set_kv`] / [`Store::delete_kv`].
//! - `gateways`: every gateway a `nodeInfo` probe answered, keyed by `(address, port)`; [`GatewayRow`].
//! - `sessions`: gateway side, one row per subscriber lease; `slot` (address pool slot) and `owner`
//!   (caller address) are unique, so the lease book can never hand one address out twice; [`SessionRow`].
//! - `connection`: subscriber side, at most one row (`id = 1`); [`ConnectionRow`].
//! - [`StoreError`]: every failure says what we were doing ("saving session 1a2b3c4d…: disk I/O error").
//!
//! # Migrations
//! `PRAGMA user_version` is the number of entries of `MIGRATIONS` already applied. Each step runs in
//! its own `IMMEDIATE` transaction that re-reads the version first, so two processes opening the same
//! file at once cannot both apply a step, and a failing step leaves the version where it was. A file
//! whose version is higher than we know was written by a newer mnigs: we refuse it rather than guess.
//! Migrations are append-only; never edit one that has shipped.
//!
//! # Reading back
//! Values are range-checked when read, not trusted because we wrote them: a port outside
//! `1..=65535`, a negative slot or broken JSON yields [`StoreError::Corrupt`], never a panic. The
//! tables are `STRICT` with `CHECK`s as well, so such rows only appear if the file was edited by hand
//! or damaged.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;

/// The schema version this build writes: the number of migrations it knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema migrations; entry `n` takes `user_version` from `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE kv (
        key   TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    CREATE TABLE gateways (
        address    TEXT    NOT NULL,
        port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        name       TEXT    NOT NULL,
        info       TEXT    NOT NULL,  -- the last nodeInfo answer, JSON
        how        TEXT    NOT NULL,  -- discovery source that found it
        hops       INTEGER NOT NULL CHECK (hops >= 0),
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        failures   INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
        PRIMARY KEY (address, port)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX gateways_last_seen ON gateways (last_seen);

    CREATE TABLE sessions (
        sid        TEXT    NOT NULL PRIMARY KEY,
        owner      TEXT    NOT NULL,  -- the caller's address; only it may renew or release
        name       TEXT    NOT NULL,
        method     TEXT    NOT NULL,
        slot       INTEGER NOT NULL CHECK (slot >= 0),
        ipv4       TEXT    NOT NULL,
        ipv6       TEXT,
        options    TEXT    NOT NULL,  -- method-specific, JSON
        granted_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX sessions_slot ON sessions (slot);
    CREATE UNIQUE INDEX sessions_owner ON sessions (owner);

    CREATE TABLE connection (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        gateway_address TEXT    NOT NULL,
        gateway_port    INTEGER NOT NULL CHECK (gateway_port BETWEEN 1 AND 65535),
        gateway_name    TEXT    NOT NULL,
        sid             TEXT    NOT NULL,
        method          TEXT    NOT NULL,
        interface       TEXT    NOT NULL,
        grant_json      TEXT    NOT NULL,  -- the gateway's requestConnection answer
        connected_at    INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL
    ) STRICT;",
    // v2: connection quality per gateway (subscriber side), one summarised row per node name.
    "CREATE TABLE quality (
        name         TEXT    NOT NULL PRIMARY KEY,  -- the gateway's node name
        rtt_ms       REAL,                          -- mean RTT of the probe window
        loss         REAL    NOT NULL CHECK (loss BETWEEN 0 AND 1),
        probes       INTEGER NOT NULL CHECK (probes >= 0),  -- probes ever sent
        lost         INTEGER NOT NULL CHECK (lost >= 0),    -- probes ever lost
        down_events  INTEGER NOT NULL CHECK (down_events >= 0),
        last_down    INTEGER,                       -- unix seconds
        last_reason  TEXT,
        updated      INTEGER NOT NULL
    ) STRICT;",
];

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Why a store operation failed. The message names what we were doing.
#[derive(Debug)]
pub enum StoreError {
    /// A file-system step around the database failed (creating its directory or file).
    Io {
        /// What we were doing, e.g. "creating directory /var/lib/mnigs".
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// SQLite failed.
    Sqlite {
        /// What we were doing, e.g. "saving session 1a2b3c4d…".
        context: String,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer mnigs whose schema we do not know.
    TooNew {
        /// The database file.
        location: String,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// A stored value is not one mnigs writes (a port out of range, broken JSON, …).
    Corrupt {
        /// What we were doing, e.g. "listing gateways".
        context: String,
        /// Which row and value are wrong.
        detail: String,
    },
    /// The row the operation changes does not exist.
    NotFound {
        /// What we were doing and what was missing.
        context: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { context, source } => write!(f, "{context}: {source}"),
            StoreError::Sqlite { context, source } => write!(f, "{context}: {source}"),
            StoreError::TooNew {
                location,
                found,
                supported,
            } => write!(
                f,
                "{location} has schema version {found} but this mnigs knows only up to {supported}; \
                 it was written by a newer mnigs (upgrade, or move the file away to start afresh)"
            ),
            StoreError::Corrupt { context, detail } => {
                write!(f, "{context}: corrupt database: {detail}")
            }
            StoreError::NotFound { context } => f.write_str(context),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Attaches "what we were doing" to a rusqlite error; the closure runs only on failure.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite {
            context: what(),
            source,
        })
    }
}

/// A failure while reading rows, before we know the context to report it in.
enum Fault {
    Sql(rusqlite::Error),
    Bad(String),
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Sql(e)
    }
}

impl Fault {
    fn in_context(self, context: String) -> StoreError {
        match self {
            Fault::Sql(source) => StoreError::Sqlite { context, source },
            Fault::Bad(detail) => StoreError::Corrupt { context, detail },
        }
    }
}

/// A gateway a `nodeInfo` probe answered.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    /// Its mesh address (IPv4 or IPv6, no brackets).
    pub address: String,
    /// Its JSON-RPC port.
    pub port: u16,
    /// The name it announced.
    pub name: String,
    /// Its last `nodeInfo` answer.
    pub info: Value,
    /// The discovery source that found it (`routes`, `cjdns`, `gossip`, …).
    pub how: String,
    /// Distance in hops as the discovery source saw it.
    pub hops: u32,
    /// Unix seconds when it was first stored; kept by [`Store::upsert_gateway`].
    pub first_seen: i64,
    /// Unix seconds of the last answer.
    pub last_seen: i64,
    /// Failures since the last [`Store::reset_gateway_failures`]; kept by [`Store::upsert_gateway`].
    pub failures: u32,
}

/// A lease this gateway granted to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id the gateway issued (128-bit, hex).
    pub sid: String,
    /// The caller's address; unique, since one caller holds one session.
    pub owner: String,
    /// The name the subscriber gave.
    pub name: String,
    /// Tunnel method name.
    pub method: String,
    /// Address pool slot; unique.
    pub slot: u32,
    /// The subscriber's tunnel IPv4 address.
    pub ipv4: String,
    /// The subscriber's tunnel IPv6 address, if the pool has one.
    pub ipv6: Option<String>,
    /// Method-specific data, e.g. `{"publicKey": …}`.
    pub options: Value,
    /// Unix seconds when the lease was first granted.
    pub granted_at: i64,
    /// Unix seconds when the lease ends unless renewed.
    pub expires_at: i64,
}

/// Our current connection to a gateway (subscriber side).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRow {
    /// The gateway's mesh address.
    pub gateway_address: String,
    /// The gateway's JSON-RPC port.
    pub gateway_port: u16,
    /// The gateway's announced name.
    pub gateway_name: String,
    /// The session id it issued us.
    pub sid: String,
    /// Tunnel method in use.
    pub method: String,
    /// Our tunnel interface.
    pub interface: String,
    /// The gateway's `requestConnection` answer, kept to tear down and re-create the tunnel.
    pub grant: Value,
    /// Unix seconds when we connected.
    pub connected_at: i64,
    /// Unix seconds when the lease ends unless renewed.
    pub expires_at: i64,
}

/// Summarised connection quality of one gateway (subscriber side).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityRow {
    /// The gateway's node name.
    pub name: String,
    /// Mean RTT of the recent probe window, if any probe was answered.
    pub rtt_ms: Option<f64>,
    /// Share of the recent probe window lost.
    pub loss: f64,
    /// Probes ever sent.
    pub probes: u64,
    /// Probes ever lost.
    pub lost: u64,
    /// Down events: on save, how many to add (0 or 1); when read, the total.
    pub down_events: i64,
    /// Unix seconds of the last down event.
    pub last_down: Option<i64>,
    /// Why it was last declared down.
    pub last_reason: Option<String>,
    /// Unix seconds of this summary.
    pub updated: i64,
}

/// The daemon's database.
pub struct Store {
    conn: Connection,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the database at `path` and brings its schema up to date.
    ///
    /// Missing parent directories are created owner-only, and a new file is created with mode
    /// 0600 before SQLite touches it (its `-wal` and `-shm` files inherit that mode). Fails with
    /// [`StoreError::TooNew`] if a newer mnigs wrote the file.
    pub fn open(path: &Path) -> Result<Store> {
        let location = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    context: format!("creating directory {}", dir.display()),
                    source,
                })?;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StoreError::Io {
                    context: format!("creating {location}"),
                    source,
                });
            }
        }
        let conn = Connection::open(path).context(|| format!("opening {location}"))?;
        Store::setup(conn, &location)
    }

    /// Opens a private, empty in-memory database with the current schema (for tests and `demo`).
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().context(|| "opening :memory:".to_string())?;
        Store::setup(conn, ":memory:")
    }

    fn setup(mut conn: Connection, location: &str) -> Result<Store> {
        let configure = |conn: &Connection| -> rusqlite::Result<()> {
            // First, so that switching to WAL waits for other processes' locks too.
            conn.pragma_update(None, "busy_timeout", 2000)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // A few tables of a few rows: 64 KiB of page cache instead of SQLite's 2 MiB keeps
            // the database out of the daemon's resident memory (the OS caches the file anyway).
            conn.pragma_update(None, "cache_size", -64)?;
            // The WAL is checkpointed every 256 pages (1 MiB) and cut back to 1 MiB afterwards, so
            // a burst of writes (a scan finding hundreds of gateways) leaves no large file behind.
            conn.pragma_update(None, "wal_autocheckpoint", 256)?;
            conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
            conn.pragma_update(None, "foreign_keys", "ON")
        };
        configure(&conn).context(|| format!("configuring {location}"))?;
        migrate(&mut conn, location, MIGRATIONS)?;
        Ok(Store { conn })
    }

    /// Runs SQLite's `PRAGMA integrity_check`; `"ok"` when the file is sound, otherwise its
    /// findings, one per line.
    pub fn integrity_check(&self) -> Result<String> {
        let mut lines = Vec::new();
        self.conn
            .pragma_query(None, "integrity_check", |row| {
                lines.push(row.get::<_, String>(0)?);
                Ok(())
            })
            .context(|| "checking database integrity".to_string())?;
        Ok(lines.join("\n"))
    }

    // --- copies (flash-friendly state, see `crate::persist`) ---

    /// Rows inserted, updated or deleted through this store since it was opened; a copy is
    /// needed only when this moved.
    pub fn total_changes(&self) -> u64 {
        self.conn.total_changes()
    }

    /// Writes a consistent copy of the whole database to `path` with SQLite's online backup,
    /// and returns its size in bytes.
    ///
    /// Made for flash: the copy is written to `PATH.tmp` without a journal (a torn copy is
    /// simply discarded), synced, then renamed over `path`, so `path` always holds a complete
    /// copy, old or new. Missing parent directories are created owner-only.
    pub fn copy_to(&self, path: &Path) -> Result<u64> {
        let location = path.display().to_string();
        let io = |context: String| move |source| StoreError::Io { context, source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(format!("creating directory {}", dir.display())))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        let copy = || -> rusqlite::Result<()> {
            let mut dst = Connection::open(&tmp)?;
            dst.pragma_update(None, "journal_mode", "OFF")?;
            dst.pragma_update(None, "synchronous", "OFF")?;
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut dst)?;
            backup.run_to_completion(i32::MAX, Duration::ZERO, None)
        };
        if let Err(e) = copy() {
            let _ = fs::remove_file(&tmp);
            return Err(e).context(|| format!("copying the database to {location}"));
        }
        let file = fs::File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
        file.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        let size = file
            .metadata()
            .map_err(io(format!("sizing {}", tmp.display())))?
            .len();
        fs::rename(&tmp, path).map_err(io(format!("renaming {} to {location}", tmp.display())))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself must reach the flash too.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(size)
    }

    /// Replaces this database's whole content with the copy at `path` (made by
    /// [`Store::copy_to`]), then checks it and brings its schema up to date.
    ///
    /// The copy is opened read-only and immutable: reading it leaves no journal, WAL or lock
    /// file on the flash.
    pub fn restore_from(&mut self, path: &Path) -> Result<()> {
        let location = path.display().to_string();
        let uri = format!(
            "file:{}?immutable=1",
            location
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23")
        );
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let src =
            Connection::open_with_flags(&uri, flags).context(|| format!("opening {location}"))?;
        rusqlite::backup::Backup::new(&src, &mut self.conn)
            .and_then(|b| b.run_to_completion(i32::MAX, Duration::ZERO, None))
            .context(|| format!("restoring from {location}"))?;
        let verdict = self.integrity_check()?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt {
                context: format!("restoring from {location}"),
                detail: verdict,
            });
        }
        migrate(&mut self.conn, &location, MIGRATIONS)
    }

    // --- kv ---

    /// Returns the setting `key`, if set. (Error messages name the key, never the value: some
    /// values are private keys.)
    pub fn get_kv(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
            .context(|| format!("reading setting {key}"))
    }

    /// Sets the setting `key` to `value`, replacing any previous value.
    pub fn set_kv(&self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
            || format!("saving setting {key}"),
        )
        .map(drop)
    }

    /// Removes the setting `key`; returns whether it was set.
    pub fn delete_kv(&self, key: &str) -> Result<bool> {
        self.execute("DELETE FROM kv WHERE key = ?1", params![key], || {
            format!("deleting setting {key}")
        })
        .map(|n| n > 0)
    }

    // --- gateways ---

    /// Stores what a probe learned about a gateway. An existing row keeps its `first_seen` and
    /// `failures`; everything else is replaced.
    pub fn upsert_gateway(&self, row: &GatewayRow) -> Result<()> {
        // The name has its own column: stored once, put back into `info` when read.
        let mut info = row.info.clone();
        if let Some(o) = info.as_object_mut() {
            o.remove("name");
        }
        self.execute(
            "INSERT INTO gateways
                 (address, port, name, info, how, hops, first_seen, last_seen, failures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (address, port) DO UPDATE SET
                 name = excluded.name, info = excluded.info, how = excluded.how,
                 hops = excluded.hops, last_seen = excluded.last_seen",
            params![
                row.address,
                row.port,
                row.name,
                crate::json::text(&info),
                row.how,
                row.hops,
                row.first_seen,
                row.last_seen,
                row.failures,
            ],
            || format!("saving gateway {}", endpoint(&row.address, row.port)),
        )
        .map(drop)
    }

    /// All stored gateways, most recently seen first.
    pub fn gateways(&self) -> Result<Vec<GatewayRow>> {
        self.query(
            "SELECT address, port, name, info, how, hops, first_seen, last_seen, failures
             FROM gateways ORDER BY last_seen DESC, address, port",
            [],
            gateway_from_row,
            || "listing gateways".to_string(),
        )
    }

    /// Counts one more failure (probe, registration or tunnel) against a gateway. A gateway we
    /// have no row for is ignored: candidates that never answered are not stored.
    pub fn record_gateway_failure(&self, address: &str, port: u16) -> Result<()> {
        self.execute(
            "UPDATE gateways SET failures = min(failures + 1, 4294967295)
             WHERE address = ?1 AND port = ?2",
            params![address, port],
            || format!("recording a failure of gateway {}", endpoint(address, port)),
        )
        .map(drop)
    }

    /// Sets a gateway's failure count back to zero (after it served us well); returns whether
    /// the gateway is stored.
    pub fn reset_gateway_failures(&self, address: &str, port: u16) -> Result<bool> {
        self.execute(
            "UPDATE gateways SET failures = 0 WHERE address = ?1 AND port = ?2",
            params![address, port],
            || format!("resetting failures of gateway {}", endpoint(address, port)),
        )
        .map(|n| n > 0)
    }

    /// Keeps the `keep` most recently seen gateways and deletes the rest; returns how many went.
    /// Bounds the store however many gateways a mesh announces.
    pub fn trim_gateways(&self, keep: usize) -> Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.execute(
            "DELETE FROM gateways WHERE (address, port) NOT IN
                 (SELECT address, port FROM gateways ORDER BY last_seen DESC, address, port LIMIT ?1)",
            params![keep],
            || format!("keeping the {keep} most recent gateways"),
        )
    }

    /// Deletes gateways last seen before `unix` (seconds); returns how many.
    pub fn forget_gateways_older_than(&self, unix: i64) -> Result<usize> {
        self.execute(
            "DELETE FROM gateways WHERE last_seen < ?1",
            params![unix],
            || format!("forgetting gateways last seen before {unix}"),
        )
    }

    // --- sessions ---

    /// Inserts a session, or replaces the one with the same `sid`. Taking another session's
    /// `slot` or `owner` is an error, never a silent eviction of that session.
    pub fn save_session(&self, row: &SessionRow) -> Result<()> {
        self.execute(
            "INSERT INTO sessions
                 (sid, owner, name, method, slot, ipv4, ipv6, options, granted_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (sid) DO UPDATE SET
                 owner = excluded.owner, name = excluded.name, method = excluded.method,
                 slot = excluded.slot, ipv4 = excluded.ipv4, ipv6 = excluded.ipv6,
                 options = excluded.options, granted_at = excluded.granted_at,
                 expires_at = excluded.expires_at",
            params![
                row.sid,
                row.owner,
                row.name,
                row.method,
                row.slot,
                row.ipv4,
                row.ipv6,
                crate::json::text(&row.options),
                row.granted_at,
                row.expires_at,
            ],
            || format!("saving session {}", short_sid(&row.sid)),
        )
        .map(drop)
    }

    /// Saves sessions (as [`Store::save_session`]) in one transaction: all of them or none.
    pub fn save_sessions(&self, rows: &[SessionRow]) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .context(|| "starting a transaction".to_string())?;
        for row in rows {
            self.save_session(row)?;
        }
        tx.commit()
            .context(|| format!("saving {} session(s)", rows.len()))
    }

    /// Deletes sessions in one transaction; returns how many existed.
    pub fn delete_sessions(&self, sids: &[&str]) -> Result<usize> {
        let tx = self
            .conn
            .unchecked_transaction()
            .context(|| "starting a transaction".to_string())?;
        let mut n = 0;
        for sid in sids {
            n += usize::from(self.delete_session(sid)?);
        }
        tx.commit()
            .context(|| format!("deleting {} session(s)", sids.len()))?;
        Ok(n)
    }

    /// Deletes a session; returns whether it existed.
    pub fn delete_session(&self, sid: &str) -> Result<bool> {
        self.execute("DELETE FROM sessions WHERE sid = ?1", params![sid], || {
            format!("deleting session {}", short_sid(sid))
        })
        .map(|n| n > 0)
    }

    /// All sessions, by slot.
    pub fn sessions(&self) -> Result<Vec<SessionRow>> {
        self.query(
            "SELECT sid, owner, name, method, slot, ipv4, ipv6, options, granted_at, expires_at
             FROM sessions ORDER BY slot",
            [],
            session_from_row,
            || "listing sessions".to_string(),
        )
    }

    /// Moves a session's expiry (on renewal); returns whether the session exists.
    pub fn set_session_expiry(&self, sid: &str, expires_at: i64) -> Result<bool> {
        self.execute(
            "UPDATE sessions SET expires_at = ?2 WHERE sid = ?1",
            params![sid, expires_at],
            || format!("renewing session {}", short_sid(sid)),
        )
        .map(|n| n > 0)
    }

    // --- connection ---

    /// Records our current connection, replacing any previous one.
    pub fn save_connection(&self, row: &ConnectionRow) -> Result<()> {
        self.execute(
            "INSERT OR REPLACE INTO connection
                 (id, gateway_address, gateway_port, gateway_name, sid, method, interface,
                  grant_json, connected_at, expires_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                row.gateway_address,
                row.gateway_port,
                row.gateway_name,
                row.sid,
                row.method,
                row.interface,
                crate::json::text(&row.grant),
                row.connected_at,
                row.expires_at,
            ],
            || {
                format!(
                    "saving the connection to {}",
                    endpoint(&row.gateway_address, row.gateway_port)
                )
            },
        )
        .map(drop)
    }

    /// Our current connection, if any.
    pub fn connection(&self) -> Result<Option<ConnectionRow>> {
        let mut rows = self.query(
            "SELECT gateway_address, gateway_port, gateway_name, sid, method, interface,
                    grant_json, connected_at, expires_at
             FROM connection WHERE id = 1",
            [],
            connection_from_row,
            || "reading the current connection".to_string(),
        )?;
        Ok(rows.pop())
    }

    /// Forgets our current connection (no-op if there is none).
    pub fn clear_connection(&self) -> Result<()> {
        self.execute("DELETE FROM connection", [], || {
            "clearing the current connection".to_string()
        })
        .map(drop)
    }

    /// Moves our connection's expiry (after a renewal). Fails with [`StoreError::NotFound`] if
    /// there is no connection: renewing a lease we do not hold is a bug worth seeing.
    pub fn set_connection_expiry(&self, expires_at: i64) -> Result<()> {
        let context = || "renewing the current connection".to_string();
        let changed = self.execute(
            "UPDATE connection SET expires_at = ?1 WHERE id = 1",
            params![expires_at],
            context,
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                context: format!("{}: there is no current connection", context()),
            });
        }
        Ok(())
    }

    // --- quality ---

    /// Saves the summary of a gateway's probe window (replacing the previous one); a down event
    /// (`down_reason` given) is counted and remembered with its reason.
    pub fn save_quality(&self, row: &QualityRow) -> Result<()> {
        self.execute(
            "INSERT INTO quality (name, rtt_ms, loss, probes, lost, down_events, last_down,
                                  last_reason, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO UPDATE SET
                 rtt_ms = excluded.rtt_ms, loss = excluded.loss, probes = excluded.probes,
                 lost = excluded.lost, updated = excluded.updated,
                 down_events = quality.down_events + excluded.down_events,
                 last_down = coalesce(excluded.last_down, quality.last_down),
                 last_reason = coalesce(excluded.last_reason, quality.last_reason)",
            params![
                row.name,
                row.rtt_ms,
                row.loss.clamp(0.0, 1.0),
                row.probes as i64,
                row.lost as i64,
                row.down_events,
                row.last_down,
                row.last_reason,
                row.updated,
            ],
            || format!("saving the quality of gateway {}", row.name),
        )
        .map(drop)
    }

    /// The quality summaries of all gateways, by name.
    pub fn quality(&self) -> Result<Vec<QualityRow>> {
        self.query(
            "SELECT name, rtt_ms, loss, probes, lost, down_events, last_down, last_reason, updated
             FROM quality ORDER BY name",
            [],
            |r| {
                Ok(QualityRow {
                    name: r.get(0)?,
                    rtt_ms: r.get(1)?,
                    loss: r.get(2)?,
                    probes: r.get::<_, i64>(3)?.max(0) as u64,
                    lost: r.get::<_, i64>(4)?.max(0) as u64,
                    down_events: r.get(5)?,
                    last_down: r.get(6)?,
                    last_reason: r.get(7)?,
                    updated: r.get(8)?,
                })
            },
            || "listing gateway quality".to_string(),
        )
    }

    // --- helpers ---

    fn execute(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        context: impl FnOnce() -> String,
    ) -> Result<usize> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params))
            .context(context)
    }

    fn query<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        parse: fn(&Row<'_>) -> std::result::Result<T, Fault>,
        context: impl FnOnce() -> String,
    ) -> Result<Vec<T>> {
        let run = || -> std::result::Result<Vec<T>, Fault> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(parse(row)?);
            }
            Ok(out)
        };
        run().map_err(|fault| fault.in_context(context()))
    }
}

/// Applies the entries of `migrations` the database lacks, one transaction each.
fn migrate(conn: &mut Connection, location: &str, migrations: &[&str]) -> Result<()> {
    let supported = migrations.len() as i64;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| format!("migrating {location}"))?;
        // Read inside the write lock: another process may have migrated meanwhile.
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .context(|| format!("reading the schema version of {location}"))?;
        if found > supported {
            return Err(StoreError::TooNew {
                location: location.to_string(),
                found,
                supported,
            });
        }
        let Some(step) = usize::try_from(found).ok().and_then(|i| migrations.get(i)) else {
            if found < 0 {
                return Err(StoreError::Corrupt {
                    context: format!("opening {location}"),
                    detail: format!("schema version {found} is not one mnigs writes"),
                });
            }
            return Ok(()); // up to date; dropping `tx` ends the empty transaction
        };
        let next = found + 1;
        tx.execute_batch(step)
            .and_then(|()| tx.pragma_update(None, "user_version", next))
            .and_then(|()| tx.commit())
            .context(|| format!("migrating {location} to schema version {next}"))?;
    }
}

fn gateway_from_row(row: &Row<'_>) -> std::result::Result<GatewayRow, Fault> {
    let address: String = row.get(0)?;
    let port: i64 = row.get(1)?;
    let bad = |detail: String| Fault::Bad(format!("gateway {address} port {port}: {detail}"));
    let name: String = row.get(2)?;
    let mut info = json_from(row.get(3)?, "info").map_err(bad)?;
    if let Some(o) = info.as_object_mut() {
        o.entry("name")
            .or_insert_with(|| serde_json::Value::String(name.clone()));
    }
    Ok(GatewayRow {
        port: port_from(port).map_err(bad)?,
        name,
        info,
        how: row.get(4)?,
        hops: u32_from(row.get(5)?, "hops").map_err(bad)?,
        first_seen: row.get(6)?,
        last_seen: row.get(7)?,
        failures: u32_from(row.get(8)?, "failures").map_err(bad)?,
        address,
    })
}

fn session_from_row(row: &Row<'_>) -> std::result::Result<SessionRow, Fault> {
    let sid: String = row.get(0)?;
    let bad = |detail: String| Fault::Bad(format!("session {}: {detail}", short_sid(&sid)));
    Ok(SessionRow {
        owner: row.get(1)?,
        name: row.get(2)?,
        method: row.get(3)?,
        slot: u32_from(row.get(4)?, "slot").map_err(bad)?,
        ipv4: row.get(5)?,
        ipv6: row.get(6)?,
        options: json_from(row.get(7)?, "options").map_err(bad)?,
        granted_at: row.get(8)?,
        expires_at: row.get(9)?,
        sid,
    })
}

fn connection_from_row(row: &Row<'_>) -> std::result::Result<ConnectionRow, Fault> {
    let bad = |detail: String| Fault::Bad(format!("connection: {detail}"));
    Ok(ConnectionRow {
        gateway_address: row.get(0)?,
        gateway_port: port_from(row.get(1)?).map_err(bad)?,
        gateway_name: row.get(2)?,
        sid: row.get(3)?,
        method: row.get(4)?,
        interface: row.get(5)?,
        grant: json_from(row.get(6)?, "grant").map_err(bad)?,
        connected_at: row.get(7)?,
        expires_at: row.get(8)?,
    })
}

fn port_from(value: i64) -> std::result::Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {value} is outside 1..=65535"))
}

fn u32_from(value: i64, column: &str) -> std::result::Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{column} {value} is outside 0..=4294967295"))
}

fn json_from(text: String, column: &str) -> std::result::Result<Value, String> {
    serde_json::from_slice(text.as_bytes()).map_err(|e| format!("{column} is not valid JSON ({e})"))
}

/// `address:port`, bracketing IPv6 addresses.
fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The first 8 characters of a session id: enough to tell sessions apart in a log, without
/// writing whole ids (which authorise renew and release) into it.
fn short_sid(sid: &str) -> String {
    match sid.char_indices().nth(8) {
        Some((cut, _)) => format!("{}…", &sid[..cut]),
        None => sid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!(
                "mnigs-store-test-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            fs::create_dir(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("mnigs.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    fn gateway(address: &str, port: u16, last_seen: i64) -> GatewayRow {
        GatewayRow {
            address: address.to_string(),
            port,
            name: format!("gw-{address}"),
            info: json!({"success": true, "name": format!("gw-{address}"), "gateway": true,
                         "methods": ["wireguard"]}),
            how: "routes".to_string(),
            hops: 2,
            first_seen: last_seen,
            last_seen,
            failures: 0,
        }
    }

    fn session(sid: &str, owner: &str, slot: u32) -> SessionRow {
        SessionRow {
            sid: sid.to_string(),
            owner: owner.to_string(),
            name: format!("node-{slot}"),
            method: "wireguard".to_string(),
            slot,
            ipv4: format!("100.127.0.{}", slot + 2),
            ipv6: Some(format!("fd7e:7e7e::{}", slot + 2)),
            options: json!({"publicKey": "abc="}),
            granted_at: 1000,
            expires_at: 1300,
        }
    }

    fn connection() -> ConnectionRow {
        ConnectionRow {
            gateway_address: "fd00::1".to_string(),
            gateway_port: 65533,
            gateway_name: "gw-1".to_string(),
            sid: "00112233445566778899aabbccddeeff".to_string(),
            method: "wireguard".to_string(),
            interface: "mnigs-wg".to_string(),
            grant: json!({"success": true, "ipv4": "100.127.0.2", "timeout": 300}),
            connected_at: 1000,
            expires_at: 1300,
        }
    }

    // --- opening and migrations ---

    #[test]
    fn fresh_file_is_migrated_once() {
        let tmp = TempDir::new();
        let store = Store::open(&tmp.db()).unwrap();
        assert_eq!(user_version(&store.conn), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
        store.set_kv("marker", "kept").unwrap();
        drop(store);

        // Re-running v1 would fail ("table kv already exists") or lose the marker.
        let store = Store::open(&tmp.db()).unwrap();
        assert_eq!(user_version(&store.conn), SCHEMA_VERSION);
        assert_eq!(store.get_kv("marker").unwrap().as_deref(), Some("kept"));
    }

    #[test]
    fn only_missing_migrations_run() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, "test", &MIGRATIONS[..1]).unwrap();
        conn.execute("INSERT INTO kv VALUES ('a', 'b')", [])
            .unwrap();
        let v2 = "ALTER TABLE kv ADD COLUMN note TEXT";
        migrate(&mut conn, "test", &[MIGRATIONS[0], v2]).unwrap();
        assert_eq!(user_version(&conn), 2);
        let note: Option<String> = conn
            .query_row("SELECT note FROM kv WHERE key = 'a'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(note, None);
        // Already at 2: nothing runs again.
        migrate(&mut conn, "test", &[MIGRATIONS[0], v2]).unwrap();
        assert_eq!(user_version(&conn), 2);
    }

    #[test]
    fn failed_migration_rolls_back() {
        let mut conn = Connection::open_in_memory().unwrap();
        let broken = "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);";
        let err = migrate(&mut conn, "test", &[MIGRATIONS[0], broken]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("migrating test to schema version 2: no such table: nowhere"),
            "{err}"
        );
        assert_eq!(user_version(&conn), 1);
        let extra: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'extra'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(extra, 0);
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new();
        drop(Store::open(&tmp.db()).unwrap());
        let conn = Connection::open(tmp.db()).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        drop(conn);

        let err = Store::open(&tmp.db()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TooNew {
                    found: 7,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("schema version 7"), "{message}");
        assert!(message.contains("newer mnigs"), "{message}");
        // Refusing must not have touched the version.
        let conn = Connection::open(tmp.db()).unwrap();
        assert_eq!(user_version(&conn), 7);
    }

    #[test]
    fn negative_schema_version_is_corrupt() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", -1).unwrap();
        let err = migrate(&mut conn, "test", MIGRATIONS).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn file_database_uses_wal_and_pragmas() {
        let tmp = TempDir::new();
        let store = Store::open(&tmp.db()).unwrap();
        let get = |name: &str| -> String {
            store
                .conn
                .pragma_query_value(None, name, |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    })
                })
                .unwrap()
        };
        assert_eq!(get("journal_mode"), "wal");
        assert_eq!(get("synchronous"), "1"); // NORMAL
        assert_eq!(get("busy_timeout"), "2000");
        // Where SQLite has foreign keys (not in the router builds of openwrt/cross-build, which
        // leave them out: there the pragma is unknown and answers nothing) they are on.
        let fk = store
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get::<_, i64>(0));
        match fk {
            // Only the router builds (musl) leave foreign keys out.
            Err(rusqlite::Error::QueryReturnedNoRows) if cfg!(target_env = "musl") => {}
            other => assert_eq!(other.ok(), Some(1)),
        }
    }

    #[test]
    fn no_table_declares_a_foreign_key() {
        // The router builds compile SQLite without foreign keys (openwrt/cross-build), where a
        // REFERENCES clause would be accepted and never enforced: the schema must not rely on one.
        for step in MIGRATIONS {
            assert!(!step.to_ascii_uppercase().contains("REFERENCES"), "{step}");
        }
    }

    #[test]
    fn open_creates_private_directories_and_file() {
        let tmp = TempDir::new();
        let path = tmp.0.join("var/lib/mnigs/mnigs.db");
        let store = Store::open(&path).unwrap();
        store.set_kv("wg_private_key", "secret").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.0.join("var/lib/mnigs")), 0o700);
    }

    #[test]
    fn open_reports_what_failed() {
        let tmp = TempDir::new();
        let blocker = tmp.0.join("file");
        fs::write(&blocker, "not a directory").unwrap();
        let err = Store::open(&blocker.join("mnigs.db")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(err.to_string().starts_with("creating directory "), "{err}");

        fs::write(tmp.db(), "this is not an SQLite database, just some text").unwrap();
        let err = Store::open(&tmp.db()).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
        assert!(err.to_string().contains("not a database"), "{err}");
    }

    #[test]
    fn integrity_check_is_ok() {
        let tmp = TempDir::new();
        let store = Store::open(&tmp.db()).unwrap();
        store.save_session(&session("s1", "fd00::2", 0)).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        assert_eq!(
            Store::open_in_memory().unwrap().integrity_check().unwrap(),
            "ok"
        );
    }

    // --- kv ---

    #[test]
    fn kv_round_trip() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.get_kv("k").unwrap(), None);
        store.set_kv("k", "one").unwrap();
        assert_eq!(store.get_kv("k").unwrap().as_deref(), Some("one"));
        store.set_kv("k", "two").unwrap();
        assert_eq!(store.get_kv("k").unwrap().as_deref(), Some("two"));
        assert!(store.delete_kv("k").unwrap());
        assert!(!store.delete_kv("k").unwrap());
        assert_eq!(store.get_kv("k").unwrap(), None);
    }

    // --- gateways ---

    #[test]
    fn gateways_round_trip_in_last_seen_order() {
        let store = Store::open_in_memory().unwrap();
        let old = gateway("10.0.0.1", 65533, 100);
        let new = gateway("fd00::1", 8080, 200);
        store.upsert_gateway(&old).unwrap();
        store.upsert_gateway(&new).unwrap();
        assert_eq!(store.gateways().unwrap(), vec![new, old]);
    }

    #[test]
    fn upsert_keeps_first_seen_and_failures() {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_gateway(&gateway("fd00::1", 65533, 100))
            .unwrap();
        store.record_gateway_failure("fd00::1", 65533).unwrap();
        store.record_gateway_failure("fd00::1", 65533).unwrap();

        let mut later = gateway("fd00::1", 65533, 500);
        later.name = "renamed".to_string();
        later.hops = 5;
        later.how = "gossip".to_string();
        later.info = json!({"success": true, "name": "renamed"});
        store.upsert_gateway(&later).unwrap();

        let rows = store.gateways().unwrap();
        assert_eq!(rows.len(), 1);
        let expected = GatewayRow {
            first_seen: 100,
            failures: 2,
            ..later
        };
        assert_eq!(rows[0], expected);

        assert!(store.reset_gateway_failures("fd00::1", 65533).unwrap());
        assert_eq!(store.gateways().unwrap()[0].failures, 0);
        assert!(!store.reset_gateway_failures("fd00::1", 1).unwrap());
    }

    #[test]
    fn failure_of_unknown_gateway_is_ignored() {
        let store = Store::open_in_memory().unwrap();
        store.record_gateway_failure("fd00::9", 65533).unwrap();
        assert!(store.gateways().unwrap().is_empty());
    }

    #[test]
    fn trimming_keeps_the_most_recent_and_names_are_stored_once() {
        let store = Store::open_in_memory().unwrap();
        for i in 0..10 {
            let mut g = gateway(&format!("10.0.0.{i}"), 1, 100 + i64::from(i));
            g.name = format!("gw{i}");
            g.info = serde_json::json!({"name": g.name, "gateway": true});
            store.upsert_gateway(&g).unwrap();
        }
        assert_eq!(store.trim_gateways(4).unwrap(), 6);
        let left = store.gateways().unwrap();
        let names: Vec<&str> = left.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["gw9", "gw8", "gw7", "gw6"]);
        assert_eq!(left[0].info["name"], "gw9", "name put back into info");
        let raw: String = store
            .conn
            .query_row("SELECT info FROM gateways LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.contains("name"), "{raw}");
        assert_eq!(store.trim_gateways(4).unwrap(), 0);
    }

    #[test]
    fn forgetting_old_gateways() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_gateway(&gateway("10.0.0.1", 1, 100)).unwrap();
        store.upsert_gateway(&gateway("10.0.0.2", 1, 200)).unwrap();
        store.upsert_gateway(&gateway("10.0.0.3", 1, 300)).unwrap();
        assert_eq!(store.forget_gateways_older_than(200).unwrap(), 1);
        let left: Vec<String> = store
            .gateways()
            .unwrap()
            .into_iter()
            .map(|g| g.address)
            .collect();
        assert_eq!(left, ["10.0.0.3", "10.0.0.2"]);
        assert_eq!(store.forget_gateways_older_than(200).unwrap(), 0);
    }

    #[test]
    fn port_zero_is_rejected_on_write() {
        let store = Store::open_in_memory().unwrap();
        let err = store.upsert_gateway(&gateway("fd00::1", 0, 1)).unwrap_err();
        assert!(
            err.to_string().starts_with("saving gateway [fd00::1]:0: "),
            "{err}"
        );
    }

    // --- sessions ---

    #[test]
    fn sessions_round_trip_by_slot() {
        let store = Store::open_in_memory().unwrap();
        let b = session("bbbb", "fd00::3", 5);
        let mut a = session("aaaa", "10.0.0.2", 1);
        a.ipv6 = None;
        store.save_session(&b).unwrap();
        store.save_session(&a).unwrap();
        assert_eq!(store.sessions().unwrap(), vec![a.clone(), b.clone()]);

        assert!(store.set_session_expiry("aaaa", 9999).unwrap());
        assert!(!store.set_session_expiry("zzzz", 9999).unwrap());
        assert_eq!(store.sessions().unwrap()[0].expires_at, 9999);

        assert!(store.delete_session("aaaa").unwrap());
        assert!(!store.delete_session("aaaa").unwrap());
        assert_eq!(store.sessions().unwrap(), vec![b]);
    }

    #[test]
    fn saving_a_session_again_replaces_it() {
        let store = Store::open_in_memory().unwrap();
        store.save_session(&session("s1", "fd00::2", 0)).unwrap();
        let mut moved = session("s1", "fd00::2", 3);
        moved.expires_at = 5000;
        store.save_session(&moved).unwrap();
        assert_eq!(store.sessions().unwrap(), vec![moved]);
    }

    #[test]
    fn slot_and_owner_are_unique() {
        let store = Store::open_in_memory().unwrap();
        let first = session("s1", "fd00::2", 0);
        store.save_session(&first).unwrap();

        let err = store
            .save_session(&session("s2", "fd00::3", 0))
            .unwrap_err();
        assert!(err.to_string().contains("sessions.slot"), "{err}");

        let err = store
            .save_session(&session("s3", "fd00::2", 1))
            .unwrap_err();
        assert!(err.to_string().contains("sessions.owner"), "{err}");

        // Moving another session onto a taken slot fails too.
        store.save_session(&session("s4", "fd00::4", 1)).unwrap();
        assert!(store.save_session(&session("s4", "fd00::4", 0)).is_err());

        // Neither conflict evicted the first session.
        assert_eq!(store.sessions().unwrap()[0], first);
    }

    #[test]
    fn session_errors_name_a_shortened_sid() {
        let store = Store::open_in_memory().unwrap();
        store
            .save_session(&session("0123456789abcdef", "fd00::2", 0))
            .unwrap();
        let err = store
            .save_session(&session("1a2b3c4d5e6f7081", "fd00::3", 0))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("saving session 1a2b3c4d…: UNIQUE constraint failed"),
            "{message}"
        );
        assert!(!message.contains("5e6f"), "{message}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn sessions_survive_restart() {
        let tmp = TempDir::new();
        let rows = vec![session("s1", "fd00::2", 0), session("s2", "10.0.0.7", 1)];
        {
            let store = Store::open(&tmp.db()).unwrap();
            for row in &rows {
                store.save_session(row).unwrap();
            }
            store.upsert_gateway(&gateway("fd00::1", 65533, 7)).unwrap();
            store.save_connection(&connection()).unwrap();
            store.set_kv("wg_private_key", "k").unwrap();
        }
        let store = Store::open(&tmp.db()).unwrap();
        assert_eq!(store.sessions().unwrap(), rows);
        assert_eq!(
            store.gateways().unwrap(),
            vec![gateway("fd00::1", 65533, 7)]
        );
        assert_eq!(store.connection().unwrap(), Some(connection()));
        assert_eq!(
            store.get_kv("wg_private_key").unwrap().as_deref(),
            Some("k")
        );
    }

    // --- connection ---

    #[test]
    fn connection_round_trip() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.connection().unwrap(), None);
        store.save_connection(&connection()).unwrap();
        assert_eq!(store.connection().unwrap(), Some(connection()));

        let mut other = connection();
        other.gateway_address = "10.0.0.1".to_string();
        other.sid = "ffff".to_string();
        store.save_connection(&other).unwrap();
        assert_eq!(store.connection().unwrap(), Some(other.clone()));
        let count: i64 = store
            .conn
            .query_row("SELECT count(*) FROM connection", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);

        store.set_connection_expiry(4242).unwrap();
        assert_eq!(store.connection().unwrap().unwrap().expires_at, 4242);

        store.clear_connection().unwrap();
        assert_eq!(store.connection().unwrap(), None);
        store.clear_connection().unwrap();
        let err = store.set_connection_expiry(1).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("no current connection"), "{err}");
    }

    // --- corrupt rows ---

    /// Writes raw SQL past the CHECK constraints, as a hand edit or damage could.
    fn corrupt(store: &Store, sql: &str) {
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA ignore_check_constraints = ON; {sql}; PRAGMA ignore_check_constraints = OFF;"
            ))
            .unwrap();
    }

    #[test]
    fn out_of_range_port_is_an_error_not_a_panic() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_gateway(&gateway("fd00::1", 65533, 1)).unwrap();
        corrupt(&store, "UPDATE gateways SET port = 70000");
        let err = store.gateways().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "listing gateways: corrupt database: gateway fd00::1 port 70000: \
             port 70000 is outside 1..=65535"
        );

        store.save_connection(&connection()).unwrap();
        corrupt(&store, "UPDATE connection SET gateway_port = -1");
        let err = store.connection().unwrap_err();
        assert!(err.to_string().contains("port -1 is outside"), "{err}");
    }

    #[test]
    fn other_corrupt_values_are_errors() {
        let store = Store::open_in_memory().unwrap();
        store.save_session(&session("s1", "fd00::2", 0)).unwrap();
        corrupt(&store, "UPDATE sessions SET slot = -3");
        let err = store.sessions().unwrap_err();
        assert!(err.to_string().contains("slot -3 is outside"), "{err}");

        corrupt(&store, "UPDATE sessions SET slot = 0, options = '{broken'");
        let err = store.sessions().unwrap_err();
        assert!(
            err.to_string().contains("options is not valid JSON"),
            "{err}"
        );

        store.upsert_gateway(&gateway("10.0.0.1", 1, 1)).unwrap();
        corrupt(&store, "UPDATE gateways SET hops = 1 << 40");
        assert!(store.gateways().is_err());
    }

    #[test]
    fn short_sid_cuts_on_characters() {
        assert_eq!(short_sid("1a2b3c4d5e6f"), "1a2b3c4d…");
        assert_eq!(short_sid("1a2b3c4d"), "1a2b3c4d");
        assert_eq!(short_sid("ééééééééé"), "éééééééé…");
        assert_eq!(endpoint("10.0.0.1", 1), "10.0.0.1:1");
    }

    #[test]
    fn quality_is_one_row_per_gateway_and_counts_down_events() {
        let store = Store::open_in_memory().unwrap();
        let mut row = QualityRow {
            name: "gw1".into(),
            rtt_ms: Some(3.5),
            loss: 0.0,
            probes: 10,
            lost: 0,
            down_events: 0,
            last_down: None,
            last_reason: None,
            updated: 100,
        };
        store.save_quality(&row).unwrap();
        row.down_events = 1;
        row.last_down = Some(110);
        row.last_reason = Some("probes failed".into());
        row.loss = 0.25;
        row.probes = 20;
        store.save_quality(&row).unwrap();
        row.down_events = 0;
        row.last_down = None;
        row.last_reason = None;
        row.updated = 120;
        store.save_quality(&row).unwrap();
        let rows = store.quality().unwrap();
        assert_eq!(rows.len(), 1);
        let q = &rows[0];
        assert_eq!((q.probes, q.down_events, q.last_down), (20, 1, Some(110)));
        assert_eq!(q.last_reason.as_deref(), Some("probes failed"));
        assert_eq!((q.loss, q.updated), (0.25, 120));
    }
}

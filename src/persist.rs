//! Flash-friendly state: the live database lives in RAM (`/var` is a tmpfs on OpenWrt) and a
//! copy is kept on flash (`option persist_path`), so that our keys and the gateways we know
//! survive a reboot without wearing the flash out.
//!
//! The copy is made with SQLite's online backup ([`Store::copy_to`]) every `persist_interval`
//! seconds, only if a row changed since the last copy, and once more at clean shutdown. At start,
//! when the live database is missing (after a reboot), it is restored from the copy.
//! [`Persister`] counts the copies and bytes written to flash.

use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};

/// Keeps the flash copy of one store and counts what it wrote.
#[derive(Debug)]
pub struct Persister {
    path: PathBuf,
    /// `Store::total_changes` when the flash copy last matched the live database.
    copied_at: u64,
    /// Copies written to flash.
    pub writes: u64,
    /// Bytes written to flash by those copies.
    pub bytes: u64,
}

impl Persister {
    /// A persister for `store` whose flash copy is at `path`. The store's present content counts
    /// as already copied (it was just restored from there, or it is still empty).
    pub fn new(path: &Path, store: &Store) -> Persister {
        Persister {
            path: path.to_path_buf(),
            copied_at: store.total_changes(),
            writes: 0,
            bytes: 0,
        }
    }

    /// Where the flash copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the live database changed since the last copy.
    pub fn due(&self, store: &Store) -> bool {
        store.total_changes() != self.copied_at
    }

    /// Copies the store to flash if it changed; returns whether a copy was written.
    pub fn save(&mut self, store: &Store) -> Result<bool, StoreError> {
        if !self.due(store) {
            return Ok(false);
        }
        let changes = store.total_changes();
        let size = store.copy_to(&self.path)?;
        self.copied_at = changes;
        self.writes += 1;
        self.bytes += size;
        Ok(true)
    }
}

/// Opens the live database at `live`; when it does not exist and a flash copy is at
/// `persisted`, fills it from that copy first. Returns the store and whether it was restored.
///
/// A copy that cannot be read or is damaged is reported and left alone; the daemon then starts
/// with an empty database, as it would without a copy.
pub fn open(
    live: &Path,
    persisted: Option<&Path>,
) -> Result<(Store, Result<bool, String>), StoreError> {
    let restore_from = persisted.filter(|p| !live.exists() && p.exists());
    let mut store = Store::open(live)?;
    let Some(copy) = restore_from else {
        return Ok((store, Ok(false)));
    };
    match store.restore_from(copy) {
        Ok(()) => Ok((store, Ok(true))),
        Err(e) => {
            // Whatever the failed restore left behind is not trusted: start empty.
            drop(store);
            for suffix in ["", "-wal", "-shm"] {
                let mut p = live.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            let store = Store::open(live)?;
            Ok((
                store,
                Err(format!("cannot restore from {}: {e}", copy.display())),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mnigs-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn copies_only_changes_and_restores_after_a_reboot() {
        let d = dir("cycle");
        let (live, flash) = (d.join("ram/live.db"), d.join("flash/state.db"));
        let (store, restored) = open(&live, Some(&flash)).unwrap();
        assert_eq!(restored, Ok(false), "nothing to restore yet");
        let mut p = Persister::new(&flash, &store);
        assert!(!p.save(&store).unwrap(), "an unchanged store is not copied");
        assert!(!flash.exists());

        store.set_kv("k", "v1").unwrap();
        assert!(p.save(&store).unwrap());
        assert!(!p.save(&store).unwrap(), "no second copy without a change");
        store.set_kv("k", "v2").unwrap();
        assert!(p.save(&store).unwrap());
        assert_eq!(p.writes, 2);
        assert_eq!(p.bytes, 2 * std::fs::metadata(&flash).unwrap().len());
        let leftovers: Vec<_> = std::fs::read_dir(d.join("flash"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers,
            [std::ffi::OsString::from("state.db")],
            "no journal, WAL or tmp on flash"
        );

        // Reboot: the RAM disk is empty again.
        drop(store);
        std::fs::remove_dir_all(d.join("ram")).unwrap();
        let (store, restored) = open(&live, Some(&flash)).unwrap();
        assert_eq!(restored, Ok(true));
        assert_eq!(store.get_kv("k").unwrap().as_deref(), Some("v2"));
        let flash_files = std::fs::read_dir(d.join("flash")).unwrap().count();
        assert_eq!(
            flash_files, 1,
            "restoring reads the copy without writing beside it"
        );

        // A live database that exists (daemon restart without reboot) is used as it is.
        store.set_kv("k", "v3").unwrap();
        drop(store);
        let (store, restored) = open(&live, Some(&flash)).unwrap();
        assert_eq!(restored, Ok(false));
        assert_eq!(store.get_kv("k").unwrap().as_deref(), Some("v3"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_copy_is_reported_and_the_daemon_starts_empty() {
        let d = dir("damaged");
        let (live, flash) = (d.join("live.db"), d.join("state.db"));
        std::fs::write(&flash, b"this is not a database, just bytes on flash").unwrap();
        let (store, restored) = open(&live, Some(&flash)).unwrap();
        let e = restored.unwrap_err();
        assert!(e.contains("state.db"), "{e}");
        assert_eq!(store.get_kv("k").unwrap(), None);
        store.set_kv("k", "v").unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! Files the tunnel methods keep in their state directories: configs, keys, certificates, pid
//! files, command files. Every write, rename and removal of theirs goes through here, so `sys/`
//! stays the one place with side effects; reading their own files they do themselves.
//!
//! Each failure is a [`FsError`] that says what was being done to which path, e.g.
//! `cannot write /var/run/mnigs/openvpn/server/ccd/x: No space left on device`.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation that failed.
#[derive(Debug)]
pub struct FsError {
    /// What was being done: `cannot create`, `cannot protect`, `cannot write`, `cannot remove`.
    pub what: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// What the system said.
    pub source: io::Error,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path.display(), self.source)
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn fail<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) and makes it accessible to its owner only (0700): keys and
/// passwords live there.
pub fn private_dir(dir: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(dir).map_err(fail("cannot create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(fail("cannot protect", dir))
}

/// Writes `content` to `path`, creating or truncating it.
pub fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<(), FsError> {
    std::fs::write(path, content).map_err(fail("cannot write", path))
}

/// Writes `content` to a file `path` that must not exist yet, readable and writable by its
/// owner only (0600): for secrets handed to a program by file name.
pub fn write_new_private(path: &Path, content: impl AsRef<[u8]>) -> Result<(), FsError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail("cannot write", path))?;
    f.write_all(content.as_ref())
        .map_err(fail("cannot write", path))
}

/// Puts the finished file `from` in place as `to` (a rename: readers of `to` see the old file
/// or the whole new one, never a part). On failure `from` is left where it is.
pub fn put_in_place(from: &Path, to: &Path) -> Result<(), FsError> {
    std::fs::rename(from, to).map_err(fail("cannot write", to))
}

/// Writes `content` to `path` whole, through the temporary file `tmp` (in the same directory)
/// that is then renamed over `path`; when the rename fails `tmp` is removed.
pub fn replace(path: &Path, tmp: &Path, content: impl AsRef<[u8]>) -> Result<(), FsError> {
    write(tmp, content)?;
    put_in_place(tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(tmp);
    })
}

/// Removes the file `path`.
pub fn remove_file(path: &Path) -> Result<(), FsError> {
    std::fs::remove_file(path).map_err(fail("cannot remove", path))
}

/// Removes the directory `path` with everything in it.
pub fn remove_dir_all(path: &Path) -> Result<(), FsError> {
    std::fs::remove_dir_all(path).map_err(fail("cannot remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mnigs-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn private_dir_is_created_with_its_parents_and_closed_to_others() {
        let d = tempdir("dir");
        let inner = d.join("a").join("b");
        private_dir(&inner).unwrap();
        assert_eq!(mode(&inner), 0o700);
        // An existing, open directory is closed too.
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&inner).unwrap();
        assert_eq!(mode(&inner), 0o700);
        // A file in the way is an error naming the path.
        let file = d.join("file");
        write(&file, "x").unwrap();
        let e = private_dir(&file).unwrap_err();
        assert_eq!(e.what, "cannot create");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot create {}: ", file.display()))
        );
        remove_dir_all(&d).unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn write_replaces_and_names_the_path_on_failure() {
        let d = tempdir("write");
        private_dir(&d).unwrap();
        let f = d.join("f");
        write(&f, "one").unwrap();
        write(&f, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "two");
        let missing = d.join("no").join("f");
        let e = write(&missing, "x").unwrap_err();
        assert_eq!(
            (e.what, e.path.as_path()),
            ("cannot write", missing.as_path())
        );
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_new_private_is_0600_and_never_overwrites() {
        let d = tempdir("new");
        private_dir(&d).unwrap();
        let f = d.join("secret");
        write_new_private(&f, "pw\n").unwrap();
        assert_eq!(mode(&f), 0o600);
        let e = write_new_private(&f, "other").unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "pw\n");
        remove_dir_all(&d).unwrap();
    }

    #[test]
    fn replace_leaves_the_whole_new_file_and_no_temporary() {
        let d = tempdir("replace");
        private_dir(&d).unwrap();
        let (f, tmp) = (d.join("f"), d.join(".f.tmp"));
        write(&f, "old").unwrap();
        replace(&f, &tmp, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert!(!tmp.exists());
        // The rename fails (a directory is in the way): the target's error, no temporary left.
        let blocked = d.join("blocked");
        private_dir(&blocked.join("sub")).unwrap();
        let e = replace(&blocked, &tmp, "x").unwrap_err();
        assert_eq!(
            (e.what, e.path.as_path()),
            ("cannot write", blocked.as_path())
        );
        assert!(!tmp.exists(), "temporary left behind");
        remove_dir_all(&d).unwrap();
    }

    #[test]
    fn removing_what_is_absent_says_so() {
        let d = tempdir("remove");
        private_dir(&d).unwrap();
        let f = d.join("f");
        write(&f, "x").unwrap();
        remove_file(&f).unwrap();
        let e = remove_file(&f).unwrap_err();
        assert_eq!(
            (e.what, e.source.kind()),
            ("cannot remove", io::ErrorKind::NotFound)
        );
        remove_dir_all(&d).unwrap();
        assert_eq!(
            remove_dir_all(&d).unwrap_err().source.kind(),
            io::ErrorKind::NotFound
        );
    }
}

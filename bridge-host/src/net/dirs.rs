//! The directories above a unix socket: created so that every sandbox user can reach the
//! socket it is given, and checked so that the daemon says at start when one cannot.
//!
//! A directory the bridge creates for a socket is 0750 (it is handed to `socket_owner`);
//! the parents it creates on the way are 0711: every user may pass through them, none may
//! list them. A parent that already exists is left as it is, but if a `socket_owner`
//! cannot search it, the socket is out of that user's reach: [`unreachable`] finds it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Mode of the directory that holds a socket.
pub const SOCKET_DIR_MODE: u32 = 0o750;
/// Mode of the parents the bridge creates above it.
pub const PARENT_MODE: u32 = 0o711;

/// Creates `dir` (mode [`SOCKET_DIR_MODE`]) and any missing parent (mode
/// [`PARENT_MODE`]), whatever the umask.
pub fn create_socket_dir(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for (i, d) in missing.iter().enumerate().rev() {
        let mode = if i == 0 { SOCKET_DIR_MODE } else { PARENT_MODE };
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        // The umask may have taken bits away.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    Ok(())
}

/// A directory a user cannot search, with its mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub dir: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (mode {:04o}, owner {}:{})",
            self.dir.display(),
            self.mode & 0o7777,
            self.uid,
            self.gid
        )
    }
}

/// The first directory above `socket` (from `/` down, the socket's own directory
/// excluded: it is handed to the user) that `uid`:`gid` cannot search, if any. Root can
/// search everything; supplementary groups are not known here, so only the primary
/// group counts.
pub fn unreachable(socket: &Path, uid: u32, gid: u32) -> Option<Blocked> {
    if uid == 0 {
        return None;
    }
    let dir = socket.parent()?;
    let above: Vec<&Path> = dir.ancestors().skip(1).collect();
    for d in above.into_iter().rev() {
        let Ok(meta) = std::fs::metadata(d) else {
            continue;
        };
        let mode = meta.mode();
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Some(Blocked {
                dir: d.to_owned(),
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_parents_are_passable_and_the_socket_dir_is_closed() {
        let t = tempfile::tempdir().unwrap();
        let leaf = t.path().join("a/b/agent");
        create_socket_dir(&leaf).unwrap();
        assert_eq!(mode(&t.path().join("a")), PARENT_MODE);
        assert_eq!(mode(&t.path().join("a/b")), PARENT_MODE);
        assert_eq!(mode(&leaf), SOCKET_DIR_MODE);
        create_socket_dir(&leaf).unwrap(); // exists: nothing to do
    }

    #[test]
    fn finds_the_directory_a_user_cannot_search() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        std::fs::set_permissions(base, PermissionsExt::from_mode(0o711)).unwrap();
        let closed = base.join("run");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o750)).unwrap();
        let sock = closed.join("agent/ollama.sock");
        // Owned by whoever runs the test; another user is "other".
        let me = nix::unistd::geteuid().as_raw();
        let other = if me == 4242 { 4243 } else { 4242 };
        let b = unreachable(&sock, other, other).expect("run/ is 0750");
        assert_eq!(b.dir, closed);
        assert!(b.to_string().contains("mode 0750"), "{b}");
        assert_eq!(unreachable(&sock, 0, 0), None, "root passes");
        std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o711)).unwrap();
        assert_eq!(unreachable(&sock, other, other), None);
    }
}

//! Directories that survive a power cut: a directory's entry lives in its parent, so the
//! parent is synced after the directory is made (a file's fsync does not make its name durable,
//! nor a directory's its own entry).

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing ancestors, each made durable in its parent, and syncs `dir`'s
/// parent even when nothing was missing: an earlier run may have made it and lost the power
/// before that was synced.
pub fn create(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    for path in missing.iter().rev() {
        match fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            // Keeps "the database opens with every acknowledged upload": without it the first
            // cut takes a new data directory, database and all (the power-cut test's first cut).
            _ => sync_parent(path)?,
        }
    }
    if missing.is_empty() {
        sync_parent(dir)?;
    }
    Ok(())
}

/// Makes the entries created, removed or renamed in `dir` durable.
pub fn sync(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `path`'s entry in its directory durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync(parent),
        // A relative path's parent is the working directory.
        _ => sync(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare relative name (`sqlite:uploads.db`) lives in the working directory: its parent
    /// is "", which cannot be opened, so "." is synced instead.
    #[test]
    fn a_bare_name_syncs_the_working_directory() {
        assert_eq!(Path::new("uploads.db").parent(), Some(Path::new("")));
        sync_parent(Path::new("uploads.db")).expect("the working directory syncs");
    }

    #[test]
    fn missing_directories_are_created_with_their_parents() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let deep = root.path().join("a/b/c");
        create(&deep).expect("created");
        assert!(deep.is_dir());
        create(&deep).expect("created again: nothing to do but sync");
    }
}

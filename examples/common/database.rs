//! Where the examples keep their SQLite file: in the system's temporary
//! directory, removed (with its WAL and shared-memory files) at the start of
//! each run, so that what a previous run left does not answer for this one.

use std::path::PathBuf;

/// The path of a fresh database called `name` in the temporary directory.
pub fn fresh(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchyard-{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        // A missing file is what a first run finds: nothing to remove.
        let _ = std::fs::remove_file(file);
    }
    path
}

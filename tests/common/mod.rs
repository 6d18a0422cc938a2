//! What the example tests share.

use std::path::Path;

/// Removes a SQLite database file with its WAL and shared-memory files,
/// those that exist.
pub fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

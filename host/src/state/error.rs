//! [`StateError`]: every failure names the database file and what was being done.

use std::path::PathBuf;

/// Why opening, reading or writing the state database failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused an operation.
    #[error("state database {}: cannot {op}: {source}", .path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done ("read runs", "apply schema migration 1", …).
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file-system call failed (creating the directory, locking the file).
    #[error("state database {}: cannot {op}: {source}", .path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a SQLite database (or is damaged beyond reading).
    #[error(
        "state database {}: the file is not a SQLite database or is corrupt ({source}); \
         move it away or point quarry.state_db at another file",
        .path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer Quarry, whose schema this one does not know.
    #[error(
        "state database {} has schema version {found}, newer than version {supported} that \
         this Quarry knows; it was written by a newer Quarry: upgrade Quarry, or point \
         quarry.state_db at another file",
        .path.display()
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// Another process (or another [`super::StateDb`] in this one) has the file open.
    #[error(
        "state database {} is in use by another Quarry process (only one `quarry serve` may \
         use a state database)",
        .path.display()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The writer or the reader thread is gone (the store was shut down).
    #[error("state database {}: cannot {op}: the state store has shut down", .path.display())]
    Closed {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
    },
}

impl StateError {
    /// Wraps an SQLite error, telling a file that is not a database apart.
    pub(super) fn sqlite(
        path: &std::path::Path,
        op: &'static str,
        source: rusqlite::Error,
    ) -> Self {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(NotADatabase | DatabaseCorrupt) => StateError::NotADatabase { path, source },
            _ => StateError::Sqlite { path, op, source },
        }
    }
}

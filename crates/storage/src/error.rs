//! Errors of the storage crate, one enum per group of operations.

use crate::layout::LayoutError;

/// Opening a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL cannot be used.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local store directory cannot be created or opened.
    #[error("cannot open local store directory {path}: {source}")]
    LocalDir {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend rejected its configuration.
    #[error("cannot open store {url}: {source}")]
    Backend {
        /// The URL given.
        url: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },
}

/// Writing a data file.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Nothing to write.
    #[error("no records to write")]
    Empty,
    /// The records do not form one contiguous, linked run of one chain in one partition.
    #[error("records for {path} are not one contiguous run: {reason}")]
    NotContiguous {
        /// The file the run was meant for.
        path: String,
        /// What breaks the run.
        reason: String,
    },
    /// Arrow or Parquet encoding failed.
    #[error("encoding {path}: {source}")]
    Encode {
        /// The file being written.
        path: String,
        /// The encoder's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A file with the same name but different rows already exists. Never overwritten.
    #[error("{path} already exists with different content ({reason}); refusing to overwrite")]
    Conflict {
        /// The file.
        path: String,
        /// How the existing file differs.
        reason: String,
    },
    /// The object store failed.
    #[error("writing {path}: {source}")]
    Store {
        /// The file being written.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

/// Listing and reading data files.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The object store failed (unreachable, denied, missing bucket, ...).
    #[error("reading {path} from {url}: {source}")]
    Store {
        /// The store.
        url: String,
        /// The path being read or listed.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A data file cannot be decoded as this format's Parquet.
    #[error("{path}: {source}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A path that does not follow the layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Why a data file's bytes are not a valid file of this format.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not Parquet, or damaged Parquet.
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow could not decode the data.
    #[error("cannot decode rows: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Parquet, but not this format's columns.
    #[error("not the otel-audit schema: {0}")]
    Schema(String),
    /// A value that the event model cannot hold (an unknown category, a negative seq, ...).
    #[error("row {row}, column {column}: {reason}")]
    Value {
        /// Row index in the file.
        row: usize,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
}

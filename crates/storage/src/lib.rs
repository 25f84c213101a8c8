//! otel-audit's stored format: the Arrow schema of a row, hive-partitioned
//! zstd Parquet files over any `object_store` backend, and verification.
//!
//! Layout: `tenant=<t>/date=YYYY-MM-DD/hour=HH/<chain>-<first_seq>.parquet`,
//! partitioned by the collector's receive time (UTC). Files are written
//! create-only: a retry of the same file is recognised, a different file under
//! a taken name is refused. `docs/FORMAT.md` describes the format.
//!
//! ```
//! # tokio_test();
//! # fn tokio_test() {
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use otel_audit_event::{AuditEvent, Category, Chain};
//! use otel_audit_storage::{Store, WriterOptions, verify, VerifyOptions, NoProgress, write_file};
//!
//! let store = Store::open("memory://", &Default::default()).unwrap();
//! let mut chain = Chain::new("c1.acme", "acme").unwrap();
//! let now = chrono::Utc::now();
//! let records: Vec<_> = (0..3)
//!     .map(|_| chain.append(now, AuditEvent::new("acme", "svc", Category::Admin, "user.create")).unwrap())
//!     .collect();
//! write_file(&store, records, &WriterOptions::default()).await.unwrap();
//! let report = verify(&store, &VerifyOptions::default(), &NoProgress).await.unwrap();
//! assert!(report.is_intact());
//! assert_eq!(report.events_verified, 3);
//! # });
//! # }
//! ```

mod batch;
pub mod copy;
pub mod digest;
mod digest_check;
mod error;
pub mod keys;
pub mod layout;
mod pages;
pub mod proof;
pub mod reader;
pub mod retention;
mod row;
mod rowhash;
pub mod schema;
mod stats;
mod store;
pub mod verify;
mod writer;

pub use batch::{BatchBuilder, batch_to_records, rows_to_batch};
pub use digest::{DigestChain, DigestFile, SealedDigest, StoredDigest};
pub use error::{DecodeError, ReadError, SinkError, StoreError};
pub use keys::{DigestSigner, KeyError, PublicKeys, SignatureCheck};
pub use layout::{DataFile, LayoutError, Partition};
pub use reader::{
    FoundEvent, ListedFile, Listing, TimeRange, find_event, list_files, read_file, read_records,
};
pub use row::{CanonicalRow, ChainTag, StoredRow, TaggedChain};
pub use rowhash::{RowLink, canonical_from_batch, scan_batch};
pub use store::{Store, StoreOptions, store_error_hint};
pub use verify::{
    DigestSummary, NoProgress, Problem, ProblemKind, Progress, VerifyError, VerifyOptions,
    VerifyReport, verify,
};
pub use writer::{
    ENCODER_CHUNK_ROWS, EncodedFile, FileEncoder, FooterMeta, WriteOutcome, WriterOptions,
    encode_file, put_file, split_runs, write_file,
};

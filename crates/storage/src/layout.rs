//! Where data files live: `tenant=<t>/date=YYYY-MM-DD/hour=HH/<chain>-<first_seq>.parquet`.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use otel_audit_event::{MAX_CHAIN_ID_BYTES, MAX_TENANT_BYTES, check_path_token};

use crate::row::StoredRow;

/// Digits of the zero-padded first seq in a file name, so names sort by seq.
pub const SEQ_DIGITS: usize = 20;

/// The hour partition a row belongs to: its tenant and the UTC hour the
/// collector received it in. A past hour never changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// The tenant.
    pub tenant: String,
    /// The UTC date.
    pub date: NaiveDate,
    /// The UTC hour, 0-23.
    pub hour: u32,
}

impl Partition {
    /// The partition of `record`.
    pub fn of<R: StoredRow + ?Sized>(record: &R) -> Self {
        Self::at(record.tenant(), record.received_at())
    }

    /// Whether `record` belongs to this partition (as `Partition::of(record)
    /// == *self`, without building one: this runs for every row written).
    pub fn holds<R: StoredRow + ?Sized>(&self, record: &R) -> bool {
        self.holds_time(record.received_at()) && record.is_of_tenant(&self.tenant)
    }

    /// Whether `t` is in this partition's hour: [`holds`](Self::holds) for
    /// a row known to be of its tenant (see
    /// [`ChainTag`](crate::ChainTag)).
    pub fn holds_time(&self, t: DateTime<Utc>) -> bool {
        self.hour == t.hour() && self.date == t.date_naive()
    }

    /// The partition of `tenant` at instant `t`.
    pub fn at(tenant: &str, t: DateTime<Utc>) -> Self {
        Partition {
            tenant: tenant.to_owned(),
            date: t.date_naive(),
            hour: t.hour(),
        }
    }

    /// The first instant of the hour.
    pub fn start(&self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.date.and_hms_opt(self.hour, 0, 0).expect("hour < 24"))
    }

    /// The first instant after the hour.
    pub fn end(&self) -> DateTime<Utc> {
        self.start() + chrono::Duration::hours(1)
    }

    /// `tenant=<t>/date=YYYY-MM-DD/hour=HH`.
    pub fn dir(&self) -> String {
        format!(
            "tenant={}/date={:04}-{:02}-{:02}/hour={:02}",
            self.tenant,
            self.date.year(),
            self.date.month(),
            self.date.day(),
            self.hour
        )
    }
}

/// A data file's identity, as its path spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFile {
    /// The partition directory.
    pub partition: Partition,
    /// The chain the rows belong to.
    pub chain_id: String,
    /// The seq of the first row.
    pub first_seq: u64,
}

impl DataFile {
    /// The file for rows of `chain_id` from `first_seq` in `partition`.
    pub fn new(partition: Partition, chain_id: impl Into<String>, first_seq: u64) -> Self {
        DataFile {
            partition,
            chain_id: chain_id.into(),
            first_seq,
        }
    }

    /// `<chain>-<first_seq, 20 digits>.parquet`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{:0width$}.parquet",
            self.chain_id,
            self.first_seq,
            width = SEQ_DIGITS
        )
    }

    /// The path relative to the store root.
    pub fn path(&self) -> String {
        format!("{}/{}", self.partition.dir(), self.file_name())
    }

    /// Parses a path relative to the store root.
    pub fn parse(path: &str) -> Result<Self, LayoutError> {
        let bad = |reason: &'static str| LayoutError {
            path: path.to_owned(),
            reason,
        };
        let mut parts = path.split('/');
        let (Some(t), Some(d), Some(h), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad(
                "expected tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/<file>",
            ));
        };
        let tenant = t
            .strip_prefix("tenant=")
            .ok_or(bad("first directory is not tenant=<t>"))?;
        check_path_token(tenant, MAX_TENANT_BYTES).map_err(|_| bad("invalid tenant name"))?;
        let date = parse_date_dir(d).ok_or(bad("second directory is not date=YYYY-MM-DD"))?;
        let hour = parse_hour_dir(h).ok_or(bad("third directory is not hour=00..23"))?;
        let stem = name
            .strip_suffix(".parquet")
            .ok_or(bad("file name does not end in .parquet"))?;
        let (chain_id, seq) = stem
            .rsplit_once('-')
            .ok_or(bad("file name is not <chain>-<first_seq>.parquet"))?;
        if seq.len() != SEQ_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("first seq in the file name is not 20 digits"));
        }
        let first_seq: u64 = seq.parse().map_err(|_| bad("first seq out of range"))?;
        check_path_token(chain_id, MAX_CHAIN_ID_BYTES).map_err(|_| bad("invalid chain id"))?;
        Ok(DataFile {
            partition: Partition {
                tenant: tenant.to_owned(),
                date,
                hour,
            },
            chain_id: chain_id.to_owned(),
            first_seq,
        })
    }
}

impl fmt::Display for DataFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Parses `date=YYYY-MM-DD`.
pub fn parse_date_dir(segment: &str) -> Option<NaiveDate> {
    let d = segment.strip_prefix("date=")?;
    if d.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
}

/// Parses `hour=HH`.
pub fn parse_hour_dir(segment: &str) -> Option<u32> {
    let h = segment.strip_prefix("hour=")?;
    if h.len() != 2 {
        return None;
    }
    h.parse().ok().filter(|h| *h < 24)
}

/// A path that is not where the layout puts data files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LayoutError {
    /// The path, relative to the store root.
    pub path: String,
    /// What does not fit.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 3, 9, 7, 59, 59).unwrap();
        let f = DataFile::new(Partition::at("acme", t), "c1.acme", 42);
        assert_eq!(
            f.path(),
            "tenant=acme/date=2026-03-09/hour=07/c1.acme-00000000000000000042.parquet"
        );
        assert_eq!(DataFile::parse(&f.path()).unwrap(), f);
        assert_eq!(
            f.partition.start(),
            Utc.with_ymd_and_hms(2026, 3, 9, 7, 0, 0).unwrap()
        );
    }

    #[test]
    fn holds_agrees_with_of() {
        let record = |tenant: &str, t: DateTime<Utc>| {
            let mut event = otel_audit_event::AuditEvent::new(
                tenant,
                "svc",
                otel_audit_event::Category::Admin,
                "x",
            );
            event.time = t;
            otel_audit_event::Record {
                received_at: t,
                event,
                chain_id: format!("c.{tenant}"),
                seq: 0,
                prev_hash: [0; 32],
                hash: [0; 32],
            }
        };
        let t = Utc.with_ymd_and_hms(2026, 3, 9, 7, 59, 59).unwrap();
        let p = Partition::at("acme", t);
        let cases = [
            record("acme", t),
            record("acme", t + chrono::Duration::seconds(1)),
            record("acme", t - chrono::Duration::hours(24)),
            record("acme", t + chrono::Duration::days(1)),
            record("acmf", t),
            record("acme-2", t),
        ];
        for r in &cases {
            assert_eq!(p.holds(r), Partition::of(r) == p, "{:?}", Partition::of(r));
        }
        assert!(p.holds(&cases[0]));
        assert!(!p.holds(&cases[1]));
    }

    #[test]
    fn rejects_foreign_paths() {
        for p in [
            "notes.txt",
            "tenant=acme/date=2026-03-09/hour=07/readme.txt",
            "tenant=acme/date=2026-3-9/hour=07/c-00000000000000000000.parquet",
            "tenant=acme/date=2026-03-09/hour=24/c-00000000000000000000.parquet",
            "tenant=acme/date=2026-03-09/hour=07/c-42.parquet",
            "tenant=a b/date=2026-03-09/hour=07/c-00000000000000000000.parquet",
        ] {
            assert!(DataFile::parse(p).is_err(), "{p}");
        }
    }
}

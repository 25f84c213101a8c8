//! The digest half of `verify`: signatures, the chain of digests, the files
//! each digest lists against the files the walk read, and continuity up to
//! the newest digest.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};

use crate::digest::{DigestListing, ListedDigest, StoredDigest, format_time, read_digest};
use crate::error::ReadError;
use crate::keys::SignatureCheck;
use crate::layout::DataFile;
use crate::store::Store;
use crate::verify::{ChainSummary, DigestSummary, Problem, ProblemKind, SeenFile, VerifyOptions};

/// Which of a chain's digests a range needs: those whose period overlaps it
/// (a period runs from the previous digest's end to its own).
fn select<'a>(digests: &'a [ListedDigest], opts: &VerifyOptions) -> Vec<&'a ListedDigest> {
    let r = &opts.range;
    let mut prev_end: Option<DateTime<Utc>> = None;
    let mut out = Vec::new();
    for d in digests {
        let after_start = r.from.is_none_or(|f| d.period_end >= f);
        let before_end = r.to.is_none_or(|t| prev_end.is_none_or(|p| p < t));
        if after_start && before_end {
            out.push(d);
        }
        prev_end = Some(d.period_end);
    }
    out
}

/// Checks the digests of `listing` and adds what is wrong to `problems`.
pub(crate) async fn check(
    store: &Store,
    opts: &VerifyOptions,
    listing: &DigestListing,
    seen: &std::collections::HashMap<String, SeenFile>,
    chains: &BTreeMap<String, ChainSummary>,
    problems: &mut Vec<Problem>,
) -> Result<DigestSummary, ReadError> {
    let mut summary = DigestSummary {
        signatures_checked: !opts.keys.is_empty(),
        ..DigestSummary::default()
    };
    for u in &listing.unexpected {
        problems.push(Problem::unexpected(
            u,
            "not a digest of this store's layout",
        ));
    }
    let as_of = opts.as_of.unwrap_or_else(Utc::now);
    let check_start = opts.range.from.is_none();
    let mut digested: HashSet<String> = HashSet::new();
    let mut newest_heads: BTreeMap<&str, u64> = BTreeMap::new();

    for (chain, all) in &listing.chains {
        let wanted = select(all, opts);
        // Owned listings: a closure over borrowed ones makes the future not
        // provably Send (rustc's higher-ranked lifetime inference), and the
        // collector verifies backups in a spawned task.
        let parsed: Vec<_> = stream::iter(wanted.into_iter().cloned())
            .map(|d| async move { read_digest(store, &d.path).await.map(|p| (d, p)) })
            .buffered(16)
            .try_collect()
            .await?;
        // The listing bounds a digest's period by the one before it; a
        // chain's first digest has none, so its own period start decides
        // whether it reaches into a range that ends before the chain began.
        let first = all.first().map(|d| d.path.as_str());
        let parsed: Vec<_> = parsed
            .into_iter()
            .filter(|(listed, p)| match (p, opts.range.to) {
                (Ok(s), Some(to)) if Some(listed.path.as_str()) == first => {
                    s.digest.period_start < to
                }
                _ => true,
            })
            .collect();
        let mut prev: Option<StoredDigest> = None;
        let mut prev_seq: Option<u64> = None;
        let mut newest: Option<StoredDigest> = None;
        for (listed, parsed) in parsed {
            summary.digests += 1;
            let before = problems.len();
            let path = listed.path.as_str();
            let stored = match parsed {
                Ok(s) => s,
                Err(e) => {
                    problems.push(Problem::new(
                        ProblemKind::BadDigest,
                        chain,
                        Some(path),
                        None,
                        e.reason,
                    ));
                    prev = None;
                    prev_seq = Some(listed.digest_seq);
                    continue;
                }
            };
            let d = &stored.digest;
            let name_end =
                chrono::Timelike::with_nanosecond(&d.period_end, 0).unwrap_or(d.period_end);
            if d.chain_id != listed.chain_id
                || d.tenant != listed.tenant
                || d.digest_seq != listed.digest_seq
                || name_end != listed.period_end
            {
                problems.push(Problem::new(
                    ProblemKind::BadDigest,
                    chain,
                    Some(path),
                    None,
                    format!(
                        "the digest says chain {:?}, tenant {:?}, seq {}, period end {}, which its path contradicts",
                        d.chain_id,
                        d.tenant,
                        d.digest_seq,
                        format_time(d.period_end)
                    ),
                ));
            }
            if summary.signatures_checked {
                match stored.check_signature(&opts.keys) {
                    SignatureCheck::Valid => {}
                    SignatureCheck::Invalid => problems.push(Problem::new(
                        ProblemKind::BadSignature,
                        chain,
                        Some(path),
                        None,
                        format!(
                            "the signature is not key {}'s over this content: the digest was altered or forged",
                            d.key_id
                        ),
                    )),
                    SignatureCheck::UnknownKey => problems.push(Problem::new(
                        ProblemKind::UnknownKey,
                        chain,
                        Some(path),
                        None,
                        format!(
                            "signed with key {}, which is not among the trusted keys ({})",
                            d.key_id,
                            opts.keys.ids().collect::<Vec<_>>().join(", ")
                        ),
                    )),
                }
            }
            let expected = prev_seq.map(|s| s + 1).or(check_start.then_some(0));
            if let Some(e) = expected {
                if d.digest_seq > e {
                    let mut p = Problem::new(
                        ProblemKind::MissingDigest,
                        chain,
                        None,
                        None,
                        format!(
                            "digests {e}..={} of the chain are missing (before {path}, whose period starts at {})",
                            d.digest_seq - 1,
                            format_time(d.period_start)
                        ),
                    );
                    p.digest_seqs = Some((e, d.digest_seq - 1));
                    problems.push(p);
                } else if d.digest_seq < e {
                    problems.push(Problem::new(
                        ProblemKind::BadDigest,
                        chain,
                        Some(path),
                        None,
                        format!("a second digest with seq {}", d.digest_seq),
                    ));
                }
            }
            match (&prev, &d.previous) {
                (_, Some(_)) if d.digest_seq == 0 => problems.push(Problem::new(
                    ProblemKind::BrokenDigestLink,
                    chain,
                    Some(path),
                    None,
                    "the chain's first digest links to a previous one".into(),
                )),
                (_, None) if d.digest_seq > 0 => problems.push(Problem::new(
                    ProblemKind::BrokenDigestLink,
                    chain,
                    Some(path),
                    None,
                    format!(
                        "digest {} has no link to digest {}",
                        d.digest_seq,
                        d.digest_seq - 1
                    ),
                )),
                (Some(p), Some(link)) if p.digest.digest_seq + 1 == d.digest_seq => {
                    if *link != p.as_previous() {
                        problems.push(Problem::new(
                            ProblemKind::BrokenDigestLink,
                            chain,
                            Some(path),
                            None,
                            format!(
                                "its link to the previous digest does not match {} (path, SHA-256 or signature differ)",
                                p.path
                            ),
                        ));
                    }
                    if d.period_start != p.digest.period_end {
                        problems.push(Problem::new(
                            ProblemKind::BadDigest,
                            chain,
                            Some(path),
                            None,
                            format!(
                                "its period starts at {}, the previous digest's ended at {}",
                                format_time(d.period_start),
                                format_time(p.digest.period_end)
                            ),
                        ));
                    }
                }
                _ => {}
            }
            for f in &d.files {
                let partition = match DataFile::parse(&f.path) {
                    Ok(df) => df.partition,
                    Err(e) => {
                        problems.push(Problem::new(
                            ProblemKind::BadDigest,
                            chain,
                            Some(path),
                            None,
                            format!("lists {:?}, which is not a data file path: {e}", f.path),
                        ));
                        continue;
                    }
                };
                if !opts.range.overlaps(partition.start(), partition.end()) {
                    continue;
                }
                summary.files_in_digests += 1;
                digested.insert(f.path.clone());
                let Some(s) = seen.get(&f.path) else {
                    problems.push(Problem::new(
                        ProblemKind::MissingFile,
                        chain,
                        Some(&f.path),
                        Some((f.first_seq, f.last_seq)),
                        format!(
                            "digest {path} lists this file ({} rows, SHA-256 {}) but the store does not hold it",
                            f.row_count,
                            hex::encode(f.sha256)
                        ),
                    ));
                    continue;
                };
                let Some(sha) = s.sha256 else { continue };
                if sha == f.sha256 {
                    continue;
                }
                match s.seqs {
                    Some((lo, hi)) if lo == f.first_seq && hi < f.last_seq => {
                        problems.push(Problem::new(
                            ProblemKind::MissingRows,
                            chain,
                            Some(&f.path),
                            Some((hi + 1, f.last_seq)),
                            format!(
                                "digest {path} records this file with seq {}..={}; its rows end at seq {hi}: rows were cut and the file rewritten",
                                f.first_seq, f.last_seq
                            ),
                        ));
                    }
                    _ => problems.push(Problem::new(
                        ProblemKind::ModifiedFile,
                        chain,
                        Some(&f.path),
                        Some((f.first_seq, f.last_seq)),
                        format!(
                            "its bytes are not the ones digest {path} records (SHA-256 {}, stored {})",
                            hex::encode(f.sha256),
                            hex::encode(sha)
                        ),
                    )),
                }
            }
            if problems.len() == before {
                summary.digests_valid += 1;
            }
            prev_seq = Some(d.digest_seq);
            prev = Some(stored.clone());
            newest = Some(stored);
        }
        let Some(newest) = newest else { continue };
        let n = &newest.digest;
        if let Some(h) = n.head {
            newest_heads.insert(chain.as_str(), h.seq);
        }
        if opts.range.to.is_none() && !n.is_final {
            let due = n.period_end + chrono::Duration::seconds(2 * n.period_secs.max(1) as i64);
            if as_of > due {
                problems.push(Problem::new(
                    ProblemKind::MissingDigest,
                    chain,
                    None,
                    None,
                    format!(
                        "the newest digest {} ended its period at {} and was not a shutdown digest; \
                         the next was due every {} s: newer digests, and the files they list, may have been deleted \
                         (or the collector stopped without writing its final digest)",
                        newest.path,
                        format_time(n.period_end),
                        n.period_secs
                    ),
                ));
            }
        }
        // A range that ends inside the newest digest's period leaves out
        // the files stored after it; the ones it holds are checked against
        // the listing above.
        let head = n
            .head
            .filter(|_| opts.range.to.is_none_or(|t| t >= n.period_end));
        if let Some(h) = head {
            let last = chains.get(chain).and_then(|c| c.last_seq);
            let already = problems.iter().any(|p| {
                p.chain_id.as_deref() == Some(chain.as_str())
                    && matches!(p.kind, ProblemKind::MissingFile | ProblemKind::MissingRows)
                    && p.seq_end.or(p.seq).is_some_and(|e| e >= h.seq)
            });
            if last.is_none_or(|l| l < h.seq) && !already {
                let from = last.map_or(0, |l| l + 1);
                problems.push(Problem::new(
                    ProblemKind::MissingRows,
                    chain,
                    None,
                    Some((from, h.seq)),
                    format!(
                        "the newest digest {} records the chain up to seq {}; the store {}",
                        newest.path,
                        h.seq,
                        last.map_or("holds none of its rows".to_owned(), |l| format!(
                            "ends at seq {l}"
                        ))
                    ),
                ));
            }
        }
    }

    for (path, s) in seen {
        if digested.contains(path.as_str()) {
            continue;
        }
        match newest_heads.get(s.chain_id.as_str()) {
            Some(head) if s.seqs.is_some_and(|(_, hi)| hi <= *head) => {
                problems.push(Problem::new(
                    ProblemKind::UndigestedFile,
                    &s.chain_id,
                    Some(path),
                    s.seqs,
                    format!(
                        "no digest lists this file, though the chain's digests reach seq {head}: it was not written by the chain's collector"
                    ),
                ));
            }
            _ => summary.files_pending += 1,
        }
    }
    if opts.range.is_unbounded() {
        for (chain, c) in chains {
            if listing.chains.contains_key(chain) {
                continue;
            }
            summary.chains_without_digests += 1;
            if listing.chains.is_empty() {
                continue;
            }
            // Where some chains have digests, all should, once their first
            // period has passed.
            let newest_end = seen
                .values()
                .filter(|s| &s.chain_id == chain)
                .map(|s| s.partition_end)
                .max();
            let grace = chrono::Duration::seconds(2 * crate::digest::DEFAULT_PERIOD_SECS as i64);
            if newest_end.is_some_and(|e| as_of > e + grace) {
                problems.push(Problem::new(
                    ProblemKind::MissingDigest,
                    chain,
                    None,
                    None,
                    format!(
                        "the chain ({} files, {} events) has no digest at all, though the store's other chains do",
                        c.files, c.events
                    ),
                ));
            }
        }
    }
    Ok(summary)
}

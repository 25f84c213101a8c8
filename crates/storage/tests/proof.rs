//! Inclusion proofs: a proof of any event verifies offline; a change to any
//! byte of it — the event, the Merkle path, the root, the digest, the
//! signature — does not.

use chrono::{TimeZone, Utc};
use otel_audit_event::{AuditEvent, Category, Chain};
use otel_audit_storage::digest::{DigestChain, DigestFile, put_digest};
use otel_audit_storage::proof::{InclusionProof, ProofInvalid, ProveError, prove, verify_proof};
use otel_audit_storage::{
    DigestSigner, PublicKeys, Store, TimeRange, WriterOptions, split_runs, write_file,
};

async fn signed_store(signer: &DigestSigner) -> (Store, Vec<uuid::Uuid>) {
    let store = Store::open("memory://", &Default::default()).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut ids = Vec::new();
    let records: Vec<_> = (0..37)
        .map(|i| {
            let mut e = AuditEvent::new("acme", "svc", Category::Inference, "llm.chat");
            e.actor.id = Some(format!("user-{i}"));
            e.gen_ai.input_tokens = Some(i);
            ids.push(e.event_id);
            chain
                .append(t0 + chrono::Duration::minutes(i * 3), e)
                .unwrap()
        })
        .collect();
    let mut digests = DigestChain::new("c1.acme", "acme", 3600, t0);
    for run in split_runs(records, 10) {
        let (enc, _) = write_file(&store, run, &WriterOptions::default())
            .await
            .unwrap();
        digests.add_file(DigestFile::of(&enc));
    }
    let sealed = digests.seal(t0 + chrono::Duration::hours(2), true, signer);
    put_digest(&store, &sealed).await.unwrap();
    (store, ids)
}

fn keys(signer: &DigestSigner) -> PublicKeys {
    let mut k = PublicKeys::new();
    k.insert(signer.public_key());
    k
}

#[tokio::test]
async fn every_event_proves_and_any_change_breaks_the_proof() {
    let signer = DigestSigner::generate().unwrap();
    let (store, ids) = signed_store(&signer).await;
    let keys = keys(&signer);
    for (i, id) in ids.iter().enumerate() {
        let proof = prove(&store, *id, &TimeRange::all()).await.unwrap();
        let s = verify_proof(&proof, &keys).unwrap();
        assert_eq!(s.seq, i as u64);
        // Through JSON, as the CLI writes and reads it.
        let text = serde_json::to_string(&proof).unwrap();
        let back: InclusionProof = serde_json::from_str(&text).unwrap();
        assert_eq!(verify_proof(&back, &keys), Ok(s));
    }

    let proof = prove(&store, ids[13], &TimeRange::all()).await.unwrap();
    assert!(!proof.audit_path.is_empty());

    let mut p = proof.clone();
    p.record.event.gen_ai.input_tokens = Some(999);
    assert_eq!(verify_proof(&p, &keys), Err(ProofInvalid::EventHash));

    let mut p = proof.clone();
    p.audit_path[0].0[5] ^= 1;
    assert_eq!(verify_proof(&p, &keys), Err(ProofInvalid::MerklePath));

    let mut p = proof.clone();
    p.file.row_index += 1;
    assert_eq!(verify_proof(&p, &keys), Err(ProofInvalid::MerklePath));

    let mut p = proof.clone();
    p.file.merkle_root[0] ^= 1;
    assert_eq!(verify_proof(&p, &keys), Err(ProofInvalid::MerklePath));

    // A consistent forgery of the file part: not what the digest lists.
    let mut p = proof.clone();
    p.file.path = p.file.path.replace("hour=", "hour=0");
    assert!(matches!(
        verify_proof(&p, &keys),
        Err(ProofInvalid::NotInDigest { .. })
    ));

    let mut p = proof.clone();
    p.digest["files"][0]["row_count"] = serde_json::json!(9);
    assert!(matches!(
        verify_proof(&p, &keys),
        Err(ProofInvalid::Signature { .. } | ProofInvalid::NotInDigest { .. })
    ));
    let mut p = proof.clone();
    p.digest["period_end"] = serde_json::json!("2030-01-01T00:00:00.000000Z");
    assert!(matches!(
        verify_proof(&p, &keys),
        Err(ProofInvalid::Signature { .. })
    ));

    let mut p = proof.clone();
    let sig = p.digest["signature"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    p.digest["signature"] = serde_json::json!(format!("{flipped}{}", &sig[1..]));
    assert!(matches!(
        verify_proof(&p, &keys),
        Err(ProofInvalid::Signature { .. })
    ));

    let other = DigestSigner::generate().unwrap();
    assert!(matches!(
        verify_proof(&proof, &self::keys(&other)),
        Err(ProofInvalid::UnknownKey { .. })
    ));

    let err = prove(&store, uuid::Uuid::now_v7(), &TimeRange::all())
        .await
        .unwrap_err();
    assert!(matches!(err, ProveError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_event_not_yet_in_a_digest_says_so() {
    let store = Store::open("memory://", &Default::default()).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
    let id = e.event_id;
    let r = chain.append(Utc::now(), e).unwrap();
    write_file(&store, vec![r], &WriterOptions::default())
        .await
        .unwrap();
    let err = prove(&store, id, &TimeRange::all()).await.unwrap_err();
    assert!(matches!(err, ProveError::NotDigested { .. }), "{err}");
    assert!(err.to_string().contains("no digest lists it yet"));
}

/// A period before a signed chain began holds neither its files nor its
/// first digest: nothing to verify there, not "the rows are missing".
#[tokio::test]
async fn a_period_before_the_chain_verifies_nothing() {
    use otel_audit_storage::{NoProgress, VerifyError, VerifyOptions, verify};
    let signer = DigestSigner::generate().unwrap();
    let (store, _) = signed_store(&signer).await;
    let before = TimeRange {
        from: Some(Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()),
        to: Some(Utc.with_ymd_and_hms(2025, 6, 2, 0, 0, 0).unwrap()),
    };
    let opts = VerifyOptions {
        range: before,
        keys: keys(&signer),
        ..VerifyOptions::default()
    };
    let err = verify(&store, &opts, &NoProgress).await.unwrap_err();
    assert!(matches!(err, VerifyError::NothingToVerify { .. }), "{err}");
    // The chain's own first hour still verifies, with its first digest.
    let first_hour = TimeRange {
        from: Some(Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()),
        to: Some(Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap()),
    };
    let opts = VerifyOptions {
        range: first_hour,
        ..opts
    };
    let r = verify(&store, &opts, &NoProgress).await.unwrap();
    assert!(r.is_intact(), "{:#?}", r.problems);
    assert_eq!(r.digests.digests, 1);
}

//! `otel-audit prove` and `otel-audit verify-proof`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use otel_audit_storage::proof::{InclusionProof, prove, verify_proof};

use crate::{EXIT_OK, EXIT_PROBLEMS, S3Flags, load_public_keys};

#[derive(Args)]
pub(crate) struct ProveArgs {
    #[command(flatten)]
    event: crate::lookup::EventAt,
    /// Write the proof here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Flags,
}

#[derive(Args)]
pub(crate) struct VerifyProofArgs {
    /// The proof (JSON, from otel-audit prove).
    #[arg(value_name = "PROOF")]
    proof: PathBuf,
    /// A trusted public key (PEM); repeat for rotated keys. Required.
    #[arg(long = "public-key", value_name = "FILE", required = true)]
    public_keys: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cmd_prove(a: ProveArgs) -> anyhow::Result<u8> {
    let (event_id, store, range) = a.event.open(&a.s3)?;
    let proof = prove(&store, event_id, &range).await?;
    let text = serde_json::to_string_pretty(&proof)? + "\n";
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("--out {}", path.display()))?;
            eprintln!(
                "wrote the proof of event {event_id} (chain {}, seq {}, digest {}) to {}",
                proof.record.chain_id,
                proof.record.seq,
                proof.digest_path,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

pub(crate) fn cmd_verify_proof(a: VerifyProofArgs) -> anyhow::Result<u8> {
    let keys = load_public_keys(&a.public_keys)?;
    let text = std::fs::read_to_string(&a.proof)
        .with_context(|| format!("PROOF {}", a.proof.display()))?;
    let proof: InclusionProof = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => bail!("{}: not an otel-audit proof: {e}", a.proof.display()),
    };
    let result = verify_proof(&proof, &keys);
    if a.json {
        let out = match &result {
            Ok(s) => serde_json::json!({"valid": true, "proof": s}),
            Err(e) => serde_json::json!({"valid": false, "reason": e.to_string()}),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    match result {
        Ok(s) => {
            if !a.json {
                println!(
                    "proof valid: event {} is seq {} of chain {}, in {}, whose Merkle root digest {} lists, signed by key {} (period ending {})",
                    s.event_id,
                    s.seq,
                    s.chain_id,
                    s.path,
                    s.digest_path,
                    s.key_id,
                    s.period_end.to_rfc3339()
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            if !a.json {
                println!("PROOF INVALID: {e}");
            }
            Ok(EXIT_PROBLEMS)
        }
    }
}

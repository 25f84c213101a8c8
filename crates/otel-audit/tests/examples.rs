//! The examples run as a user runs them (`cargo run -p otel-audit --example
//! NAME`) and write what they say, with nothing sensitive in clear.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn run(name: &str, expected_events: usize) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(example(name))
        .current_dir(tmp.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "{expected_events} audit events exported to JSON lines"
        )),
        "{stdout}"
    );
    let file = tmp
        .path()
        .join("target/audit-examples")
        .join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(text.lines().count(), expected_events);
    for line in text.lines() {
        let e: otel_audit::AuditEvent = serde_json::from_str(line).unwrap();
        e.validate().unwrap();
    }
    text
}

#[test]
fn llm_chat() {
    let text = run("llm_chat", 4);
    for secret in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "opening hours",
        "acct-7731-0042",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("\"outcome\":\"blocked\""));
    assert!(text.contains("\"block_reason\":\"prompt injection"));
    assert!(text.contains("\"outcome\":\"failure\""));
    assert!(text.contains("\"field\":\"gen_ai.output.messages\""));
}

#[test]
fn agent_tools() {
    let text = run("agent_tools", 4);
    assert!(!text.contains("DE89370400440532013000"));
    assert!(!text.contains("C-1029"), "tool arguments are content");
    assert!(text.contains("\"outcome\":\"denied\""));
    assert!(text.contains("\"tool_name\":\"issue_payment\""));
}

#[test]
fn admin_actions() {
    let text = run("admin_actions", 13);
    assert!(!text.contains("bob@example.com"));
    for action in [
        "project.create",
        "user.delete",
        "license.upload",
        "backup.run",
        "tasks.export",
    ] {
        assert!(
            text.contains(&format!("\"action\":\"{action}\"")),
            "{action}"
        );
    }
}

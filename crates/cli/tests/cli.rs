//! The `otel-audit` binary: exit codes, one-line errors, --json, --help, report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otel-audit"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run otel-audit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(e.starts_with("otel-audit: error: "), "{e}");
    assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
}

const GEN: &[&str] = &[
    "--events",
    "3000",
    "--tenants",
    "2",
    "--start",
    "2026-01-05",
    "--hours",
    "4",
    "--max-file-rows",
    "300",
];

fn generate(dir: &Path) -> Output {
    let o = bin()
        .args(["generate", "--store", dir.to_str().unwrap()])
        .args(GEN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn generate_then_verify_is_intact_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    generate(&a);
    generate(&b);
    let o = run(&["verify", a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("intact: 2 chains"), "{out}");
    assert!(out.contains("3000 events verified"), "{out}");
    // The same seed gives byte-identical stores.
    let contents = |root: &Path| {
        walk(root)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(contents(&a) == contents(&b), "same seed, different stores");
    // Re-running is idempotent: identical files are recognised, not rewritten.
    let o = generate(&a);
    assert!(
        stderr(&o).contains("identical files were already there"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_json_and_problems_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    generate(&root);
    let victim = walk(&root)
        .into_iter()
        .find(|p| {
            p.to_str()
                .unwrap()
                .ends_with("00000000000000000000.parquet")
        })
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["verify", root.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["intact"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0]["kind"], "unreadable_file");
    let rel = victim
        .strip_prefix(&root)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(problems[0]["path"], rel.as_str());
    // The human report names kind and place, and counts per kind.
    let o = run(&["verify", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("unreadable_file {rel}")), "{out}");
    assert!(
        out.contains("INTEGRITY PROBLEMS: 1 found (1 unreadable_file)"),
        "{out}"
    );
}

#[test]
fn bad_input_gets_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = empty.to_str().unwrap();
    assert_one_line_error(&run(&["verify", e]), "no audit data found");
    assert_one_line_error(&run(&["verify", "gs://bucket/x"]), "unsupported scheme");
    assert_one_line_error(&run(&["verify", "file://relative/path"]), "absolute path");
    assert_one_line_error(
        &run(&["verify", e, "--from", "yesterday"]),
        "--from \"yesterday\" is not a time",
    );
    assert_one_line_error(
        &run(&["verify", e, "--from", "2026-01-02", "--to", "2026-01-01"]),
        "--from must be before --to",
    );
    assert_one_line_error(
        &run(&["generate", "--store", e, "--events", "0"]),
        "--events must be at least 1",
    );
    let o = bin()
        .args([
            "verify",
            "s3://bucket/p?endpoint=http://127.0.0.1:1&allow_http=true",
        ])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_one_line_error(&o, "Connection refused");
    // A usage mistake is clap's exit 2 with the usage line.
    let o = run(&["verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage"), "{}", stderr(&o));
}

#[test]
fn help_teaches_with_examples() {
    for cmd in ["generate", "verify", "report"] {
        let o = run(&[cmd, "--help"]);
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("Example"),
            "{cmd} --help has no example:\n{out}"
        );
    }
    let out = String::from_utf8_lossy(&run(&["verify", "--help"]).stdout).into_owned();
    assert!(out.contains("Exit codes: 0 intact, 1 integrity problems found, 2 usage or I/O error"));
}

#[test]
fn report_is_written_with_verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    generate(&root);
    let store = root.to_str().unwrap();
    let html = dir.path().join("r.html");
    let period = ["--from", "2026-01-05", "--to", "2026-01-05T04:00:00Z"];
    let o = bin()
        .args(["report", "--store", store, "--out", html.to_str().unwrap()])
        .args(period)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Integrity: INTACT"));
    for id in ["chart-activity", "chart-models", "chart-admin"] {
        assert!(page.contains(&format!(r#"<section id="{id}""#)), "{id}");
    }

    // A damaged file: the report is still written, and the exit code says so.
    let victim = walk(&root)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let o = bin()
        .args(["report", "--store", store, "--format", "markdown"])
        .args(period)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("## Integrity: PROBLEMS FOUND"), "{md}");
    assert!(md.contains("| unreadable\\_file | 1 |"), "{md}");
    assert!(md.contains("1 data file(s) could not be read"), "{md}");

    assert_one_line_error(
        &run(&["report", "--store", store, "--to", "noon"]),
        "--to \"noon\" is not a time",
    );
    let missing = dir.path().join("missing");
    assert_one_line_error(
        &run(&["report", "--store", missing.to_str().unwrap()]),
        "no such directory",
    );
    assert!(!missing.exists(), "a mistyped store path was created");
}

#[otel_audit::audit(skip(nope))]
fn f(prompt: &str) {}
fn main() {}

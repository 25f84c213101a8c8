#[otel_audit::audit(action = "x", acton = "y")]
fn f() {}
fn main() {}

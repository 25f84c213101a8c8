#[otel_audit::audit(action = "x", category = admin, action = "y")]
fn f() {}
fn main() {}

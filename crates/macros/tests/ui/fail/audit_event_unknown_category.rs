fn main() {
    let _ = otel_audit::audit_event!(category = admn, action = "user.create");
}

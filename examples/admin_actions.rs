//! Administrative audit events, as an annotation lab (GenAI Lab) records them:
//! project lifecycle, team and label configuration, task import/export, model
//! download, user management, license upload, export toggles and backups.
//!
//! `cargo run -p otel-audit --example admin_actions`

#[path = "common.rs"]
mod common;

use otel_audit::{Actor, ActorType, EmitError, Outcome, audit_event};

fn main() -> Result<(), EmitError> {
    let setup = common::install("admin_actions", "annotation-lab");
    let admin = Actor {
        id: Some("user-admin".into()),
        kind: Some(ActorType::User),
        role: Some("admin".into()),
        ip: Some("10.0.0.5".into()),
        session: Some("sess-admin-01".into()),
    };
    let a = || admin.clone();

    audit_event!(
        category = admin,
        action = "project.create",
        actor = a(),
        target = ("project", "p-radiology"),
        fields(name = "Radiology NER", template = "ner")
    )?;
    audit_event!(
        category = admin,
        action = "project.team.update",
        actor = a(),
        target = ("project", "p-radiology"),
        fields(
            added = "user-bob",
            role = "annotator",
            "added.email" = "bob@example.com"
        )
    )?;
    audit_event!(
        category = admin,
        action = "project.labels.update",
        actor = a(),
        target = ("project", "p-radiology"),
        fields(labels = "DRUG,DOSAGE,ROUTE")
    )?;
    audit_event!(
        category = data_access,
        action = "tasks.import",
        actor = a(),
        target = ("project", "p-radiology"),
        fields(tasks = 1200, source = "s3://lab-in/rad/")
    )?;
    audit_event!(
        category = governance,
        action = "model.download",
        actor = a(),
        target = ("model", "ner_clinical_large"),
        fields(version = "5.2.1", hub = "models-hub")
    )?;
    audit_event!(
        category = admin,
        action = "user.create",
        actor = a(),
        target = ("user", "user-bob"),
        fields(role = "annotator")
    )?;
    audit_event!(
        category = admin,
        action = "user.update",
        actor = a(),
        target = ("user", "user-bob"),
        fields(role = "supervisor")
    )?;
    audit_event!(
        category = compliance,
        action = "license.upload",
        actor = a(),
        target = ("license", "lic-2026"),
        fields(seats = 25, expires = "2027-01-31")
    )?;
    audit_event!(
        category = governance,
        action = "settings.export.toggle",
        actor = a(),
        target = ("setting", "allow_export"),
        fields(value = false)
    )?;
    // Export refused: exports are off.
    audit_event!(
        category = data_access,
        action = "tasks.export",
        actor = "user-bob",
        target = ("project", "p-radiology"),
        outcome = Outcome::Denied,
        fields(
            format = "json",
            reason = "exports are disabled by the administrator"
        )
    )?;
    audit_event!(
        category = system,
        action = "backup.run",
        actor = "svc-backup",
        target = ("backup", "s3://lab-backups/2026-11-22"),
        fields(projects = 14, bytes = 73400320)
    )?;
    audit_event!(
        category = admin,
        action = "user.delete",
        actor = a(),
        target = ("user", "user-bob")
    )?;
    audit_event!(
        category = admin,
        action = "project.delete",
        actor = a(),
        target = ("project", "p-radiology"),
        fields(reason = "retention period ended")
    )?;

    setup.finish();
    Ok(())
}

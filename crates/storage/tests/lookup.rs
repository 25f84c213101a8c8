//! Finding one event by id: through the partitions around the time in its
//! UUIDv7 first, and anywhere in the range when its id says otherwise.

use chrono::{DateTime, TimeZone, Utc};
use otel_audit_event::{AuditEvent, Category, Chain};
use otel_audit_storage::reader::uuid_v7_time;
use otel_audit_storage::{Store, TimeRange, WriterOptions, find_event, split_runs, write_file};

/// A UUIDv7 minted at `t`.
fn id_at(t: DateTime<Utc>, n: u16) -> uuid::Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        t.timestamp() as u64,
        t.timestamp_subsec_nanos(),
    );
    let mut b = *uuid::Uuid::new_v7(ts).as_bytes();
    b[14..16].copy_from_slice(&n.to_be_bytes());
    uuid::Uuid::from_bytes(b)
}

#[tokio::test]
async fn finds_events_near_and_far_from_their_id_time() {
    let store = Store::open("memory://", &Default::default()).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut near = Vec::new();
    let mut records = Vec::new();
    // 48 hours, one event every 20 minutes, ids minted a second before receipt.
    for i in 0..144 {
        let received = t0 + chrono::Duration::minutes(i * 20);
        let mut e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
        e.event_id = id_at(received - chrono::Duration::seconds(1), i as u16);
        near.push((e.event_id, received));
        records.push(chain.append(received, e).unwrap());
    }
    // An event whose id was minted by a client with a clock a week off.
    let mut e = AuditEvent::new("acme", "svc", Category::Admin, "user.delete");
    e.event_id = id_at(t0 - chrono::Duration::days(7), 9999);
    let far = e.event_id;
    records.push(chain.append(t0 + chrono::Duration::hours(47), e).unwrap());
    for run in split_runs(records, 5) {
        write_file(&store, run, &WriterOptions::default())
            .await
            .unwrap();
    }

    for (id, received) in [near[0], near[70], near[143]] {
        assert_eq!(
            uuid_v7_time(id),
            Some(received - chrono::Duration::seconds(1))
        );
        let found = find_event(&store, id, &TimeRange::all())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.record().event.event_id, id);
        assert_eq!(found.record().received_at, received);
    }
    let found = find_event(&store, far, &TimeRange::all())
        .await
        .unwrap()
        .expect("found outside the window of its id's time");
    assert_eq!(found.record().event.action, "user.delete");
    assert_eq!(found.record().seq, 144);

    // A range that excludes the event's partition: not found.
    let early = TimeRange {
        from: None,
        to: Some(t0 + chrono::Duration::hours(24)),
    };
    assert!(find_event(&store, far, &early).await.unwrap().is_none());
    assert!(
        find_event(&store, uuid::Uuid::now_v7(), &TimeRange::all())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        uuid_v7_time(uuid::Uuid::from_u128(
            0x6ba7b810_9dad_41d1_80b4_00c04fd430c8
        )),
        None
    );
}

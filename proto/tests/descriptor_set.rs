//! The embedded descriptor set is what reflection serves; these tests make sure it describes
//! every contract and that the generated messages round-trip.

use prost::Message;
use prost_types::FileDescriptorSet;

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

#[test]
fn descriptor_set_contains_all_three_packages() {
    let set = descriptor_set();
    let packages: Vec<&str> = set
        .file
        .iter()
        .filter_map(|f| f.package.as_deref())
        .collect();
    for expected in proto::PACKAGES {
        assert!(
            packages.contains(expected),
            "package {expected} missing from the descriptor set; found {packages:?}"
        );
    }
}

#[test]
fn descriptor_set_describes_both_services_with_their_methods() {
    let set = descriptor_set();
    let methods = |package: &str, service: &str| -> Vec<String> {
        set.file
            .iter()
            .filter(|f| f.package.as_deref() == Some(package))
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name.as_deref() == Some(service))
            .flat_map(|s| s.method.iter().filter_map(|m| m.name.clone()))
            .collect()
    };
    assert_eq!(
        methods("mp3converter.auth.v1", "AuthService"),
        ["Register", "Login", "Validate"]
    );
    let storage = methods("mp3converter.storage.v1", "StorageService");
    for rpc in [
        "Upload",
        "Download",
        "Stat",
        "Delete",
        "CreateJob",
        "TransitionJob",
    ] {
        assert!(
            storage.iter().any(|m| m == rpc),
            "StorageService lacks {rpc}: {storage:?}"
        );
    }
}

#[test]
fn descriptor_set_includes_the_imported_well_known_types() {
    // Reflection clients resolve imports through the same set, so Timestamp must be in it.
    let set = descriptor_set();
    assert!(
        set.file
            .iter()
            .any(|f| f.name.as_deref() == Some("google/protobuf/timestamp.proto"))
    );
}

#[test]
fn event_envelope_round_trips_through_its_wire_encoding() {
    use proto::events::v1::{Event, VideoUploaded, event::Payload};
    let event = Event {
        event_id: "8c1f7a36-8d0e-4c55-9f1e-0b3e4f5a6b7c".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        request_id: "trace-me-123".into(),
        payload: Some(Payload::VideoUploaded(VideoUploaded {
            job_id: "65a1b2c3d4e5f60718293a4b".into(),
            video_id: "65a1b2c3d4e5f60718293a4c".into(),
            owner_id: "42".into(),
            owner_email: "a@example.com".into(),
            original_filename: "clip.mp4".into(),
        })),
    };
    let bytes = event.encode_to_vec();
    assert_eq!(Event::decode(bytes.as_slice()).unwrap(), event);
}

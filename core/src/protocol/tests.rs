use super::*;

fn hello() -> Message {
    Message::Hello(Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        credential: vec![1, 2, 3],
        cursor: Some(Cursor {
            relay_id: "r1".into(),
            seq: 42,
        }),
        client: "test".into(),
    })
}

fn samples() -> Vec<Message> {
    vec![
        hello(),
        Message::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            relay_id: "r1".into(),
            head: 9,
            oldest_resumable: 1,
            full_sync: false,
        }),
        Message::Upload(Upload {
            batch: 7,
            changes: vec![UploadChange {
                doc_id: "ord_x".into(),
                bytes: vec![0; 40],
            }],
        }),
        Message::UploadAck(UploadAck {
            batch: 7,
            accepted: vec![vec![9; 32]],
            refused: vec![Refusal {
                hash: vec![8; 32],
                doc_id: "ord_y".into(),
                code: ErrorCode::Forbidden,
                reason: "a courier may not edit prices".into(),
            }],
        }),
        Message::Changes(Changes {
            entries: vec![LogEntry {
                seq: 10,
                doc_id: "dlv_z".into(),
                bytes: vec![5; 12],
            }],
            cursor: 10,
            caught_up: true,
            unshared: vec!["dlv_gone".into()],
        }),
        Message::DocSync(DocSync {
            doc_id: "ord_x".into(),
            message: vec![66; 20],
        }),
        Message::Error(WireError {
            code: ErrorCode::ExpiredCredential,
            message: "expired".into(),
            fatal: true,
        }),
        Message::Bye,
        Message::DocSyncOffered(DocSyncOffered { documents: 3 }),
        Message::DocSyncComplete(DocSyncComplete { cursor: 99 }),
        Message::Unshare(Unshare {
            doc_ids: vec!["dlv_z".into()],
        }),
        Message::Snapshots(Snapshots {
            docs: vec![DocSnapshot {
                doc_id: "ord_x".into(),
                bytes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2],
            }],
            through: 30,
            done: true,
        }),
    ]
}

#[test]
fn version_1_1_only_appends_snapshots() {
    // Variants are numbered by position: a 1.0 peer still reads every 1.0 message,
    // and `Snapshots` (1.1) takes the next number.
    let first_byte = |m: &Message| postcard::to_stdvec(m).unwrap()[0];
    let unshare = Message::Unshare(Unshare { doc_ids: vec![] });
    assert_eq!(first_byte(&unshare), 10);
    let snapshots = Message::Snapshots(Snapshots {
        docs: vec![],
        through: 0,
        done: true,
    });
    assert_eq!(first_byte(&snapshots), 11);
    assert!(SNAPSHOTS_SINCE <= PROTOCOL_VERSION);
    let old = Version { major: 1, minor: 0 };
    assert!(negotiate(PROTOCOL_VERSION, old).unwrap() < SNAPSHOTS_SINCE);
}

#[test]
fn every_message_round_trips_through_a_frame() {
    for message in samples() {
        let frame = encode(&message, DEFAULT_MAX_FRAME).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&frame);
        let payload = decoder.next_frame().unwrap().unwrap();
        assert_eq!(decode(&payload).unwrap(), message);
        assert_eq!(decoder.next_frame().unwrap(), None);
    }
}

#[test]
fn frames_survive_arbitrary_splitting() {
    let stream: Vec<u8> = samples()
        .iter()
        .flat_map(|m| encode(m, DEFAULT_MAX_FRAME).unwrap())
        .collect();
    for chunk in [1, 2, 3, 7, 64] {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(decode(&frame).unwrap());
            }
        }
        assert_eq!(out, samples(), "chunk size {chunk}");
        assert_eq!(decoder.buffered(), 0);
    }
}

#[test]
fn an_oversize_frame_is_refused_from_its_prefix_alone() {
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(&(1025u32).to_be_bytes());
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            size: 1025,
            max: 1024
        })
    );
    assert!(matches!(
        encode_frame(&[0; 2048], 1024),
        Err(ProtocolError::FrameTooLarge { size: 2048, .. })
    ));
    assert_eq!(
        ProtocolError::FrameTooLarge { size: 1, max: 0 }.code(),
        ErrorCode::FrameTooLarge
    );
}

#[test]
fn garbage_is_a_typed_error() {
    for bytes in [&b""[..], &[0xff; 9], &[200, 1, 2, 3], b"GET / HTTP/1.1\r\n"] {
        let err = decode(bytes).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedMessage, "{err}");
    }
    let mut payload = postcard::to_stdvec(&Message::Bye).unwrap();
    payload.push(0);
    assert!(matches!(decode(&payload), Err(ProtocolError::Malformed(_))));
}

#[test]
fn the_handshake_refuses_other_majors_and_non_hellos() {
    let (_, version) = accept_hello(hello()).unwrap();
    assert_eq!(version, PROTOCOL_VERSION);

    let newer_minor = Version {
        major: PROTOCOL_VERSION.major,
        minor: PROTOCOL_VERSION.minor + 3,
    };
    assert_eq!(
        negotiate(PROTOCOL_VERSION, newer_minor).unwrap(),
        PROTOCOL_VERSION
    );

    let Message::Hello(mut future) = hello() else {
        unreachable!()
    };
    future.version = Version {
        major: PROTOCOL_VERSION.major + 1,
        minor: 0,
    };
    let err = accept_hello(Message::Hello(future)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    assert!(err.to_string().contains("2.0 is not supported"), "{err}");

    let Message::Hello(mut noise) = hello() else {
        unreachable!()
    };
    noise.magic = *b"HTTP";
    assert!(matches!(
        accept_hello(Message::Hello(noise)),
        Err(ProtocolError::Malformed(_))
    ));
    assert_eq!(
        accept_hello(Message::Bye),
        Err(ProtocolError::Unexpected {
            expected: "hello",
            got: "bye"
        })
    );
}

#[test]
fn a_change_frame_is_small() {
    // Framing and encoding overhead on one typical 300-byte change: a few bytes.
    let message = Message::Upload(Upload {
        batch: 1,
        changes: vec![UploadChange {
            doc_id: format!("ord_{}", "a".repeat(32)),
            bytes: vec![7; 300],
        }],
    });
    let frame = encode(&message, DEFAULT_MAX_FRAME).unwrap();
    assert!(frame.len() <= 300 + 36 + 12, "{} bytes", frame.len());
}

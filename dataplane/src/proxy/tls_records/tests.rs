use proptest::prelude::*;

use super::*;

/// The two ends of one direction of a connection: what one seals, the other opens.
fn pair(version: Version, suite: u8, seq: u64) -> (Direction, Direction) {
    let secrets = || match suite {
        0 => ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::from([9u8; 12]),
        },
        _ => ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::from([9u8; 12]),
        },
    };
    (
        Direction::new(version, (seq, secrets())).expect("sealing side"),
        Direction::new(version, (seq, secrets())).expect("opening side"),
    )
}

const VERSIONS: [Version; 2] = [Version::Tls12, Version::Tls13];

/// Opens every record in `sealed`, in order.
fn open_all(
    opener: &mut Direction,
    version: Version,
    mut sealed: Vec<u8>,
) -> Vec<(ContentType, Vec<u8>)> {
    let mut opened = Vec::new();
    while !sealed.is_empty() {
        let len = record_len(version, &sealed)
            .expect("header")
            .expect("whole header");
        let (content_type, content) = opener.open(&mut sealed[..len]).expect("opens");
        opened.push((content_type, content.to_vec()));
        sealed.drain(..len);
    }
    opened
}

#[test]
fn records_sealed_by_one_end_open_at_the_other_in_order_with_their_types() {
    for version in VERSIONS {
        for suite in [0, 1] {
            let (mut sealer, mut opener) = pair(version, suite, 5);
            let mut sealed = Vec::new();
            let big = vec![0x5a; MAX_PLAINTEXT];
            sealer
                .seal(ContentType::ApplicationData, b"hello", &mut sealed)
                .expect("seal");
            sealer
                .seal(ContentType::Alert, &[1, 0], &mut sealed)
                .expect("seal");
            sealer
                .seal(ContentType::ApplicationData, b"", &mut sealed)
                .expect("seal");
            sealer
                .seal(ContentType::ApplicationData, &big, &mut sealed)
                .expect("seal");
            assert_eq!(sealer.seq(), 9, "one sequence number per record");
            let opened = open_all(&mut opener, version, sealed);
            assert_eq!(
                opened,
                vec![
                    (ContentType::ApplicationData, b"hello".to_vec()),
                    (ContentType::Alert, vec![1, 0]),
                    (ContentType::ApplicationData, Vec::new()),
                    (ContentType::ApplicationData, big.clone()),
                ],
                "{version:?} suite {suite}"
            );
        }
    }
}

#[test]
fn tls13_hides_the_content_type_and_tls12_gcm_carries_its_nonce() {
    let (mut tls13, _) = pair(Version::Tls13, 0, 0);
    let mut sealed = Vec::new();
    tls13
        .seal(ContentType::Alert, &[1, 0], &mut sealed)
        .expect("seal");
    assert_eq!(
        sealed[0],
        u8::from(ContentType::ApplicationData),
        "outer type"
    );
    assert_eq!(sealed.len(), HEADER_LEN + 2 + 1 + TAG_LEN);

    let (mut gcm12, _) = pair(Version::Tls12, 0, 3);
    let mut sealed = Vec::new();
    gcm12
        .seal(ContentType::ApplicationData, b"x", &mut sealed)
        .expect("seal");
    assert_eq!(sealed.len(), HEADER_LEN + EXPLICIT_NONCE_LEN + 1 + TAG_LEN);
    let mut expected_nonce = [9u8; 8];
    expected_nonce[7] ^= 3;
    assert_eq!(
        &sealed[HEADER_LEN..HEADER_LEN + 8],
        &expected_nonce,
        "IV XOR sequence"
    );
}

#[test]
fn an_altered_replayed_or_misordered_record_is_refused_as_bad_mac() {
    for version in VERSIONS {
        for suite in [0, 1] {
            let (mut sealer, _) = pair(version, suite, 0);
            let mut first = Vec::new();
            sealer
                .seal(ContentType::ApplicationData, b"first", &mut first)
                .expect("seal");
            let mut second = Vec::new();
            sealer
                .seal(ContentType::ApplicationData, b"second", &mut second)
                .expect("seal");

            for position in HEADER_LEN..first.len() {
                let (_, mut opener) = pair(version, suite, 0);
                let mut altered = first.clone();
                altered[position] ^= 1;
                assert_eq!(
                    opener.open(&mut altered).map(|_| ()),
                    Err(RecordError::BadMac),
                    "{version:?} suite {suite}, byte {position} flipped"
                );
            }
            let (_, mut opener) = pair(version, suite, 0);
            assert_eq!(
                opener.open(&mut second.clone()).map(|_| ()),
                Err(RecordError::BadMac),
                "second record first"
            );
            let (_, mut opener) = pair(version, suite, 0);
            opener.open(&mut first.clone()).expect("first record");
            assert_eq!(
                opener.open(&mut first.clone()).map(|_| ()),
                Err(RecordError::BadMac),
                "the first record again"
            );
        }
    }
}

#[test]
fn headers_outside_the_protocol_are_refused_before_decryption() {
    assert_eq!(record_len(Version::Tls13, &[23, 3, 3, 0]), Ok(None));
    assert_eq!(record_len(Version::Tls13, &[23, 3, 3, 0, 17]), Ok(Some(22)));
    assert_eq!(
        record_len(Version::Tls13, b"GET / HTTP/1.1"),
        Err(RecordError::NotTls(0x4554))
    );
    assert_eq!(
        record_len(Version::Tls13, &[23, 3, 3, 0x41, 0x01]),
        Err(RecordError::Overflow(0x4101))
    );
    assert_eq!(
        record_len(Version::Tls12, &[23, 3, 3, 0x41, 0x01]),
        Ok(Some(0x4106))
    );

    let (_, mut opener) = pair(Version::Tls13, 0, 0);
    assert_eq!(
        opener.open(&mut [22, 3, 3, 0, 1, 0]).map(|_| ()),
        Err(RecordError::UnexpectedType(ContentType::Handshake)),
        "a TLS 1.3 record is application data outside"
    );
    assert_eq!(
        opener.open(&mut [23, 3, 3, 0, 3, 1, 2, 3]).map(|_| ()),
        Err(RecordError::TooShort)
    );
    let (_, mut opener) = pair(Version::Tls12, 0, 0);
    assert_eq!(
        opener.open(&mut [20, 3, 3, 0, 1, 1]).map(|_| ()),
        Err(RecordError::UnexpectedType(ContentType::ChangeCipherSpec)),
        "no change_cipher_spec after the handshake"
    );
}

#[test]
fn a_tls13_record_of_padding_only_has_no_content_type() {
    let (mut sealer, mut opener) = pair(Version::Tls13, 1, 0);
    let mut sealed = Vec::new();
    sealer
        .seal(ContentType::from(0), b"", &mut sealed)
        .expect("seal");
    assert_eq!(
        opener.open(&mut sealed).map(|_| ()),
        Err(RecordError::NoContentType)
    );
    assert_eq!(
        RecordError::NoContentType.alert(),
        AlertDescription::UnexpectedMessage
    );
}

#[test]
fn too_much_plaintext_and_exhausted_sequence_numbers_are_refused_and_leave_the_output_alone() {
    let (mut sealer, _) = pair(Version::Tls13, 0, 0);
    let mut out = b"before".to_vec();
    assert_eq!(
        sealer.seal(
            ContentType::ApplicationData,
            &vec![0; MAX_PLAINTEXT + 1],
            &mut out
        ),
        Err(RecordError::Overflow(MAX_PLAINTEXT + 1))
    );
    assert_eq!(out, b"before");
    assert_eq!(sealer.seq(), 0, "no sequence number used");

    let (mut sealer, mut opener) = pair(Version::Tls12, 1, u64::MAX - 1);
    let mut sealed = Vec::new();
    sealer
        .seal(ContentType::ApplicationData, b"last", &mut sealed)
        .expect("last record");
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, b"more", &mut sealed),
        Err(RecordError::SequenceExhausted)
    );
    opener.open(&mut sealed).expect("the last record opens");
    assert_eq!(
        opener.open(&mut [
            23, 3, 3, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]),
        Err(RecordError::SequenceExhausted)
    );
}

proptest! {
    #[test]
    fn arbitrary_received_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        tls13 in any::<bool>(),
        suite in 0u8..2,
    ) {
        let version = if tls13 { Version::Tls13 } else { Version::Tls12 };
        let (_, mut opener) = pair(version, suite, 0);
        let mut bytes = bytes;
        if let Ok(Some(len)) = record_len(version, &bytes) {
            let end = len.min(bytes.len());
            prop_assert!(opener.open(&mut bytes[..end]).is_err(), "forged records never open");
        }
    }

    #[test]
    fn any_plaintext_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
        tls13 in any::<bool>(),
        suite in 0u8..2,
        seq in any::<u64>().prop_map(|seq| seq / 2),
    ) {
        let version = if tls13 { Version::Tls13 } else { Version::Tls12 };
        let (mut sealer, mut opener) = pair(version, suite, seq);
        let mut sealed = Vec::new();
        sealer.seal(ContentType::ApplicationData, &plaintext, &mut sealed).expect("seal");
        let opened = open_all(&mut opener, version, sealed);
        prop_assert_eq!(opened, vec![(ContentType::ApplicationData, plaintext)]);
    }
}

//! Property tests: `decode` must never panic (and must return promptly) on
//! arbitrary input, for every claimed UUID/company id and random others, with
//! and without a bindkey.
//!
//! Invariant checked besides "no panic": a successful decode never yields more
//! fields than there are input bytes (bounded output / allocation).

use proptest::prelude::*;

use super::{decode, Advert, Keys};

const CLAIMED_UUIDS: &[u16] = &[0xFCD2, 0x181A, 0xFE95, 0xFEAA];
const CLAIMED_COMPANIES: &[u16] = &[0x0499, 0x004C];

fn id_strategy(claimed: &'static [u16]) -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => proptest::sample::select(claimed),
        1 => any::<u16>(),
    ]
}

fn check(advert: Advert, key: Option<[u8; 16]>, mac: [u8; 6]) {
    let keys = Keys {
        bindkey: key.as_ref(),
        mac,
    };
    if let Ok(d) = decode(&advert, &keys) {
        let len = match advert {
            Advert::ServiceData { data, .. } | Advert::ManufacturerData { data, .. } => data.len(),
        };
        assert!(
            d.fields.len() <= len.max(1) * 2,
            "{} fields from {len} bytes",
            d.fields.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn service_data_never_panics(
        uuid in id_strategy(CLAIMED_UUIDS),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        key in proptest::option::of(any::<[u8; 16]>()),
        mac in any::<[u8; 6]>(),
    ) {
        check(Advert::ServiceData { uuid, data: &data }, key, mac);
    }

    #[test]
    fn manufacturer_data_never_panics(
        company in id_strategy(CLAIMED_COMPANIES),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        key in proptest::option::of(any::<[u8; 16]>()),
        mac in any::<[u8; 6]>(),
    ) {
        check(Advert::ManufacturerData { company, data: &data }, key, mac);
    }

    /// Structured fuzzing: valid-looking headers followed by random bytes reach
    /// much deeper into the object parsers than uniform noise does.
    #[test]
    fn structured_headers_never_panic(
        which in 0usize..6,
        tail in proptest::collection::vec(any::<u8>(), 0..60),
        key in proptest::option::of(any::<[u8; 16]>()),
    ) {
        let (prefix, advert_kind): (&[u8], u16) = match which {
            0 => (&[0x40], 0xFCD2),
            1 => (&[0x41], 0xFCD2),
            2 => (&[0x58, 0x58, 0x5b, 0x05, 0x50], 0xFE95),
            3 => (&[0x50, 0x20, 0xaa, 0x01, 0xda], 0xFE95),
            4 => (&[0x20, 0x00], 0xFEAA),
            _ => (&[0x05], 0x0499),
        };
        let data = [prefix, &tail[..]].concat();
        let advert = if advert_kind == 0x0499 {
            Advert::ManufacturerData { company: advert_kind, data: &data }
        } else {
            Advert::ServiceData { uuid: advert_kind, data: &data }
        };
        check(advert, key, [0xA4, 0xC1, 0x38, 0, 0, 0]);
    }
}

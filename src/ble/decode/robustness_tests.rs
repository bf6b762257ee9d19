//! Property tests: `decode` must never panic (and must return promptly) on
//! arbitrary input, for every claimed UUID/company id and random others, with
//! and without a bindkey.
//!
//! Invariant checked besides "no panic": a successful decode never yields more
//! fields than there are input bytes (bounded output / allocation).

use proptest::prelude::*;

use super::{decode, Advert, Keys};

const CLAIMED_UUIDS: &[u16] = &[0xFCD2, 0x181A, 0xFE95, 0xFEAA, 0xFD50, 0x181D, 0x181B];
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

    /// MiBeacon objects: every id of the table (and random ones), any length and value,
    /// for the products whose objects differ by model and for random ones, plain and under
    /// legacy (unauthenticated) encryption, whose garbage reaches the object parsers.
    #[test]
    fn mibeacon_objects_never_panic(
        objects in proptest::collection::vec(
            (id_strategy(MIBEACON_IDS), proptest::collection::vec(any::<u8>(), 0..12)),
            1..5,
        ),
        product in id_strategy(MIBEACON_PRODUCTS),
        legacy in any::<bool>(),
        key in any::<[u8; 16]>(),
        trunc in 0usize..4,
    ) {
        let [p0, p1] = product.to_le_bytes();
        let mut data = if legacy { vec![0x58, 0x30, p0, p1, 7] } else { vec![0x40, 0x50, p0, p1, 7] };
        for (id, v) in &objects {
            data.extend(id.to_le_bytes());
            data.push(v.len() as u8);
            data.extend(v);
        }
        if legacy {
            data.extend([1, 2, 3, 4]);
        }
        data.truncate(data.len().saturating_sub(trunc));
        let advert = Advert::ServiceData { uuid: 0xFE95, data: &data };
        check(advert, legacy.then_some(key), [0xA4, 0xC1, 0x38, 0, 0, 1]);
    }

    /// BTHome's event and length-prefixed objects, and Eddystone-URL frames.
    #[test]
    fn bthome_events_and_eddystone_urls_never_panic(
        id in proptest::sample::select(&[0x3Au8, 0x3B, 0x3C, 0x53, 0x54, 0x65, 0xF1][..]),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let data = [&[0x44, id][..], &tail].concat();
        check(Advert::ServiceData { uuid: 0xFCD2, data: &data }, None, [0; 6]);
        let data = [&[0x10][..], &tail].concat();
        check(Advert::ServiceData { uuid: 0xFEAA, data: &data }, None, [0; 6]);
    }
}

/// Every MiBeacon object id the decoder knows.
const MIBEACON_IDS: &[u16] = &[
    0x0003, 0x0006, 0x0007, 0x0008, 0x000A, 0x000B, 0x000F, 0x0010, 0x1001, 0x1004, 0x1005, 0x1006,
    0x1007, 0x1008, 0x1009, 0x100A, 0x100D, 0x100E, 0x100F, 0x1010, 0x1012, 0x1013, 0x1014, 0x1015,
    0x1017, 0x1018, 0x1019, 0x101B, 0x2000, 0x3003, 0x4801, 0x4802, 0x4803, 0x4804, 0x4805, 0x4806,
    0x4808, 0x480C, 0x4818, 0x483C, 0x483D, 0x483E, 0x484E, 0x4851, 0x4852, 0x487B, 0x4A01, 0x4A08,
    0x4A0C, 0x4A0D, 0x4A0E, 0x4A0F, 0x4A12, 0x4A13, 0x4A1A, 0x4A68, 0x4C01, 0x4C02, 0x4C03, 0x4C08,
    0x4C14, 0x4E01, 0x4E0C, 0x4E0D, 0x4E0E, 0x4E16, 0x4E1C, 0x5003, 0x5403, 0x5413, 0x5414, 0x5422,
    0x560C, 0x560D, 0x560E, 0x5810, 0x6012, 0x605D, 0x6461, 0x6E16,
];

/// The product ids whose objects the decoder reads by model.
const MIBEACON_PRODUCTS: &[u16] = &[
    0x0098, 0x0153, 0x01AA, 0x0380, 0x0387, 0x03B6, 0x03BC, 0x03BF, 0x04E1, 0x04E6, 0x055B, 0x069F,
    0x07BF, 0x07F6, 0x0863, 0x098B, 0x0997, 0x09B0, 0x0A83, 0x0A8D, 0x0DFD, 0x1568, 0x1569, 0x1949,
    0x1C10, 0x2387, 0x3A61, 0x3E17, 0x4683, 0x4F59, 0x520B, 0x5968, 0x6375, 0x6A0F,
];

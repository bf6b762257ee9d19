//! Batches on the wire: several queued messages of one topic as one MQTT message.
//!
//! A batch is an array whose elements are the messages' payloads, oldest first: a JSON
//! array, or a CBOR array with the same structure. A payload that is not JSON (a plain
//! per-field string) becomes a string element. The array may then be compressed with zstd
//! or raw DEFLATE (RFC 1951, no zlib header). What a batch holds is announced by its name
//! ([`BatchConfig::suffix`], e.g. `batch.cbor.zst`): as a last topic level under MQTT 3.1.1,
//! as the content type under MQTT 5.
//!
//! [`decode`] is the subscriber's side; `sensorgate decode batch` and the tests use it.

use crate::config::{BatchConfig, Compression, Encoding};
use std::io::Write;

/// zstd level: level 3 (zstd's default) compresses small sensor batches about as well as
/// higher levels at a fraction of the CPU.
const ZSTD_LEVEL: i32 = 3;

/// Whether `p` can go into a JSON array as it is. Objects (the gateway's JSON payloads) get
/// a syntax check; other payloads (plain per-field values) must parse as a JSON value.
fn is_json(p: &[u8]) -> bool {
    match p.first() {
        Some(b'{') => flat_object(p) || serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok(),
        Some(_) => serde_json::from_slice::<serde_json::Value>(p).is_ok(),
        None => false,
    }
}

/// A quick yes for the objects the gateway's mapper writes: flat, no whitespace, keys and
/// string values of printable ASCII without escapes, values that are such strings, numbers
/// of at most 17 digits without exponent, `true`, `false` or `null`. Anything else gets
/// serde_json's full check, so this only has to never say yes to what is not JSON (a
/// proptest holds it to serde_json). It saves a full parse per payload of a replay.
fn flat_object(p: &[u8]) -> bool {
    fn string(p: &[u8], mut i: usize) -> Option<usize> {
        if p.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        loop {
            match *p.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => return None,
                0x20..=0x7e => i += 1,
                _ => return None,
            }
        }
    }
    fn digits(p: &[u8], mut i: usize, count: &mut usize) -> usize {
        while p.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
            *count += 1;
        }
        i
    }
    fn number(p: &[u8], mut i: usize) -> Option<usize> {
        let mut count = 0;
        if p.get(i) == Some(&b'-') {
            i += 1;
        }
        match p.get(i)? {
            b'0' => {
                i += 1;
                count += 1;
            }
            b'1'..=b'9' => i = digits(p, i, &mut count),
            _ => return None,
        }
        if p.get(i) == Some(&b'.') {
            let j = digits(p, i + 1, &mut count);
            if j == i + 1 {
                return None;
            }
            i = j;
        }
        (count <= 17).then_some(i)
    }
    fn value(p: &[u8], i: usize) -> Option<usize> {
        match p.get(i)? {
            b'"' => string(p, i),
            b't' if p[i..].starts_with(b"true") => Some(i + 4),
            b'f' if p[i..].starts_with(b"false") => Some(i + 5),
            b'n' if p[i..].starts_with(b"null") => Some(i + 4),
            _ => number(p, i),
        }
    }
    let object = || -> Option<()> {
        let mut i = 1;
        if p.get(1) == Some(&b'}') {
            return (p.len() == 2).then_some(());
        }
        loop {
            i = string(p, i)?;
            if p.get(i) != Some(&b':') {
                return None;
            }
            i = value(p, i + 1)?;
            match p.get(i)? {
                b',' => i += 1,
                b'}' => return (i + 1 == p.len()).then_some(()),
                _ => return None,
            }
        }
    };
    p.first() == Some(&b'{') && object().is_some()
}

fn element(p: &[u8]) -> serde_json::Value {
    serde_json::from_slice(p)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
}

/// Encodes `payloads` (oldest first) as one batch.
pub fn encode<'a>(
    cfg: &BatchConfig,
    payloads: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let array = match cfg.encoding {
        Encoding::Json => {
            let len: usize = payloads.clone().map(|p| p.len() + 1).sum();
            let mut out = Vec::with_capacity(len + 2);
            out.push(b'[');
            for (i, p) in payloads.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if is_json(p) {
                    out.extend_from_slice(p);
                } else {
                    let s = String::from_utf8_lossy(p);
                    serde_json::to_writer(&mut out, &s).expect("writing to a Vec cannot fail");
                }
            }
            out.push(b']');
            out
        }
        Encoding::Cbor => {
            let items: Vec<serde_json::Value> = payloads.map(element).collect();
            let mut out = Vec::new();
            ciborium::into_writer(&items, &mut out).expect("writing to a Vec cannot fail");
            out
        }
    };
    match cfg.compression {
        Compression::None => array,
        Compression::Zstd => {
            zstd::bulk::compress(&array, ZSTD_LEVEL).expect("zstd compresses any input")
        }
        Compression::Deflate => {
            let mut e = flate2::write::DeflateEncoder::new(
                Vec::with_capacity(array.len() / 2),
                flate2::Compression::default(),
            );
            e.write_all(&array).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
    }
}

/// Why a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("`{0}` is not a batch name (expected e.g. batch.json, batch.cbor.zst)")]
    Name(String),
    #[error("decompressing: {0}")]
    Decompress(std::io::Error),
    #[error("not a JSON array: {0}")]
    Json(serde_json::Error),
    #[error("not a CBOR array: {0}")]
    Cbor(String),
}

/// Reads a batch named `name` (a topic's last level or a v5 content type): its elements,
/// oldest first.
pub fn decode(name: &str, bytes: &[u8]) -> Result<Vec<serde_json::Value>, DecodeError> {
    let mut parts = name.split('.');
    if parts.next() != Some("batch") {
        return Err(DecodeError::Name(name.into()));
    }
    let encoding = parts.next();
    let compression = parts.next();
    if parts.next().is_some() {
        return Err(DecodeError::Name(name.into()));
    }
    let raw = match compression {
        None => bytes.to_vec(),
        Some("zst") => zstd::stream::decode_all(bytes).map_err(DecodeError::Decompress)?,
        Some("deflate") => {
            let mut out = Vec::new();
            let mut d = flate2::write::DeflateDecoder::new(&mut out);
            d.write_all(bytes)
                .and_then(|_| d.finish().map(|_| ()))
                .map_err(DecodeError::Decompress)?;
            out
        }
        Some(_) => return Err(DecodeError::Name(name.into())),
    };
    match encoding {
        Some("json") => serde_json::from_slice(&raw).map_err(DecodeError::Json),
        Some("cbor") => {
            ciborium::from_reader(raw.as_slice()).map_err(|e| DecodeError::Cbor(e.to_string()))
        }
        _ => Err(DecodeError::Name(name.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::Duration;

    fn cfg(encoding: Encoding, compression: Compression) -> BatchConfig {
        BatchConfig {
            max_readings: 100,
            max_delay: Duration::from_secs(1),
            encoding,
            compression,
        }
    }

    const ALL: [(Encoding, Compression); 6] = [
        (Encoding::Json, Compression::None),
        (Encoding::Json, Compression::Zstd),
        (Encoding::Json, Compression::Deflate),
        (Encoding::Cbor, Compression::None),
        (Encoding::Cbor, Compression::Zstd),
        (Encoding::Cbor, Compression::Deflate),
    ];

    #[test]
    fn every_encoding_round_trips() {
        let payloads: Vec<&[u8]> = vec![
            br#"{"t":21.5,"_seq":1}"#,
            b"22.25",
            b"open",
            br#"{"t":-3,"s":"a\"b","_seq":3}"#,
        ];
        let want = vec![
            json!({"t":21.5,"_seq":1}),
            json!(22.25),
            json!("open"),
            json!({"t":-3,"s":"a\"b","_seq":3}),
        ];
        for (e, c) in ALL {
            let cfg = cfg(e, c);
            let bytes = encode(&cfg, payloads.iter().copied());
            assert_eq!(decode(cfg.suffix(), &bytes).unwrap(), want, "{e:?} {c:?}");
        }
    }

    #[test]
    fn compression_pays_on_repetitive_readings() {
        let payloads: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                format!(r#"{{"temperature":21.{i},"humidity":40,"_ts":1764158400{i:03},"_gw":"mast-7","_seq":{i}}}"#)
                    .into_bytes()
            })
            .collect();
        let plain = encode(
            &cfg(Encoding::Json, Compression::None),
            payloads.iter().map(|p| p.as_slice()),
        );
        for (e, c) in ALL.into_iter().filter(|(_, c)| *c != Compression::None) {
            let packed = encode(&cfg(e, c), payloads.iter().map(|p| p.as_slice()));
            assert!(
                packed.len() * 3 < plain.len(),
                "{e:?} {c:?}: {} of {}",
                packed.len(),
                plain.len()
            );
        }
    }

    #[test]
    fn bad_names_and_bytes_are_errors() {
        assert!(matches!(decode("json", b"[]"), Err(DecodeError::Name(_))));
        assert!(matches!(
            decode("batch.xml", b"[]"),
            Err(DecodeError::Name(_))
        ));
        assert!(matches!(
            decode("batch.json.gz", b"[]"),
            Err(DecodeError::Name(_))
        ));
        assert!(decode("batch.json.zst", b"not zstd").is_err());
        assert!(decode("batch.cbor", b"\xff\xff").is_err());
    }

    #[test]
    fn the_quick_check_knows_the_mappers_payloads() {
        for p in [
            &br#"{"temperature":20.09,"humidity":50.08,"_ts":1795706979529,"_gw":"smoke","_seq":1}"#[..],
            br#"{"state":"on","ok":true,"gone":null,"low":false,"t":-0.5,"n":0}"#,
            br#"{}"#,
        ] {
            assert!(flat_object(p), "{}", String::from_utf8_lossy(p));
        }
        for p in [
            &br#"{"a":1,}"#[..],
            br#"{"a":01}"#,
            br#"{"a":1.}"#,
            br#"{"a":"\u00e9"}"#,
            br#"{"a":{"b":1}}"#,
            br#"{"a":1} "#,
            br#"{"a" :1}"#,
            br#"{"a":1e5}"#,
            br#"{"a":tru}"#,
            br#"{"#,
        ] {
            assert!(!flat_object(p), "{}", String::from_utf8_lossy(p));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_survive_every_encoding(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20),
            which in 0usize..6,
        ) {
            let (e, c) = ALL[which];
            let cfg = cfg(e, c);
            let bytes = encode(&cfg, payloads.iter().map(|p| p.as_slice()));
            let back = decode(cfg.suffix(), &bytes).unwrap();
            prop_assert_eq!(back.len(), payloads.len());
            for (v, p) in back.iter().zip(&payloads) {
                prop_assert_eq!(v, &element(p));
            }
        }

        #[test]
        fn the_quick_check_says_yes_only_to_json(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(b'{'), Just(b'}'), Just(b'"'), Just(b':'), Just(b','), Just(b'-'),
                    Just(b'.'), Just(b'0'), Just(b'7'), Just(b'e'), Just(b'\\'), Just(b' '),
                    Just(b'a'), Just(0xc3u8),
                ],
                0..40,
            ),
            word in r"true|false|null|tru|nul|-|-0|01|1\.|1\.5|\.5|-\.5|123456789012345678",
        ) {
            let mut with_word = b"{\"k\":".to_vec();
            with_word.extend_from_slice(word.as_bytes());
            with_word.push(b'}');
            for p in [bytes, with_word] {
                if flat_object(&p) {
                    prop_assert!(
                        serde_json::from_slice::<serde::de::IgnoredAny>(&p).is_ok(),
                        "accepted {:?}",
                        String::from_utf8_lossy(&p)
                    );
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), which in 0usize..6) {
            let (e, c) = ALL[which];
            let _ = decode(cfg(e, c).suffix(), &bytes);
        }
    }
}

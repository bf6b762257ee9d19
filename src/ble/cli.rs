//! `sensorgate decode ble`: decodes advertisement bytes given on the command line with the
//! same decoders the BLE input uses, for a user whose sensor publishes nothing; and the
//! arguments of `sensorgate ble scan` (run by `crate::input::ble::survey`, reported by
//! [`crate::ble::survey`]).
//!
//! **Invariant:** the output is one JSON object (the fields of every element that decoded,
//! then `decoder`), or an error that says why each element was refused.

use crate::ble::decode::{self, Advert, Keys};
use crate::ble::values::{parse_address, parse_hex, parse_uuid, uuid16};
use serde_json::{Map, Value as Json};

/// The arguments of `sensorgate decode ble`.
#[derive(Debug, clap::Args)]
pub struct DecodeBle {
    /// Service data: a 16-bit UUID and the bytes after it, e.g. fcd2=40020a09.
    #[arg(long = "service-data", value_name = "UUID=HEX")]
    pub service_data: Vec<String>,
    /// Manufacturer data: the company id and the bytes after it, e.g. 0x0499=0512fc...
    #[arg(long = "manufacturer-data", value_name = "ID=HEX")]
    pub manufacturer_data: Vec<String>,
    /// The device's bindkey (32 hex digits), for encrypted BTHome and MiBeacon.
    #[arg(long, value_name = "HEX")]
    pub bindkey: Option<String>,
    /// The device's address (encrypted formats use it in the nonce).
    #[arg(long, value_name = "ADDRESS")]
    pub mac: Option<String>,
}

/// The arguments of `sensorgate ble scan`.
#[derive(Debug, clap::Args)]
pub struct ScanBle {
    /// How long to listen, in seconds (1..3600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// The adapter to listen on, e.g. hci0; the first one by default.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
}

/// Runs the command: the JSON object on stdout and exit 0, or the reason on stderr, exit 1.
pub fn run(args: &DecodeBle) -> anyhow::Result<std::process::ExitCode> {
    let mut elements = Vec::new();
    for s in &args.service_data {
        elements.push(Element::service(s).map_err(anyhow::Error::msg)?);
    }
    for m in &args.manufacturer_data {
        elements.push(Element::manufacturer(m).map_err(anyhow::Error::msg)?);
    }
    match decode_elements(&elements, args.bindkey.as_deref(), args.mac.as_deref()) {
        Ok(json) => {
            println!("{json}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("sensorgate: no decoder accepts these bytes: {reason}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// One `--service-data UUID=HEX` or `--manufacturer-data ID=HEX` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Service { uuid: u16, data: Vec<u8> },
    Manufacturer { company: u16, data: Vec<u8> },
}

impl Element {
    /// `fcd2=40020a09` or `0000fcd2-0000-1000-8000-00805f9b34fb=40020a09`.
    pub fn service(arg: &str) -> Result<Element, String> {
        let (u, hex) = split(arg)?;
        let uuid = parse_uuid(u)
            .and_then(uuid16)
            .ok_or_else(|| format!("`{u}` is not a 16-bit service UUID (such as fcd2)"))?;
        Ok(Element::Service {
            uuid,
            data: bytes(hex)?,
        })
    }

    /// `0x0499=05...` or `1177=05...` (decimal).
    pub fn manufacturer(arg: &str) -> Result<Element, String> {
        let (id, hex) = split(arg)?;
        let company = match id.strip_prefix("0x").or_else(|| id.strip_prefix("0X")) {
            Some(h) => u16::from_str_radix(h, 16).ok(),
            None => id.parse().ok(),
        }
        .ok_or_else(|| format!("`{id}` is not a company id (0x0499 or 1177)"))?;
        Ok(Element::Manufacturer {
            company,
            data: bytes(hex)?,
        })
    }
}

fn split(arg: &str) -> Result<(&str, &str), String> {
    arg.split_once('=')
        .ok_or_else(|| format!("`{arg}`: write ID=HEX"))
}

fn bytes(hex: &str) -> Result<Vec<u8>, String> {
    parse_hex(&hex.replace([':', ' '], "")).ok_or_else(|| format!("`{hex}` is not hex bytes"))
}

/// Decodes the elements; `mac` is `A4:C1:38:8E:11:22` (needed by encrypted formats).
pub fn decode_elements(
    elements: &[Element],
    bindkey: Option<&str>,
    mac: Option<&str>,
) -> Result<Json, String> {
    if elements.is_empty() {
        return Err("give --service-data UUID=HEX or --manufacturer-data ID=HEX".into());
    }
    let key = match bindkey {
        None => None,
        Some(k) => Some(
            parse_hex(k)
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
                .ok_or("--bindkey must be 32 hex digits")?,
        ),
    };
    let mac = match mac {
        None => [0; 6],
        Some(m) => parse_address(m).ok_or("--mac must be an address such as A4:C1:38:8E:11:22")?,
    };
    let keys = Keys {
        bindkey: key.as_ref(),
        mac,
    };
    let mut out = Map::new();
    let mut decoders = Vec::new();
    let mut reasons = Vec::new();
    for e in elements {
        let (advert, what) = match e {
            Element::Service { uuid, data } => (
                Advert::ServiceData { uuid: *uuid, data },
                format!("service data {uuid:04x}"),
            ),
            Element::Manufacturer { company, data } => (
                Advert::ManufacturerData {
                    company: *company,
                    data,
                },
                format!("manufacturer data 0x{company:04x}"),
            ),
        };
        match decode::decode(&advert, &keys) {
            Ok(d) => {
                for (name, v) in d.fields {
                    let mut s = String::new();
                    v.write_json(&mut s);
                    out.insert(name, serde_json::from_str(&s).unwrap_or(Json::Null));
                }
                decoders.push(d.decoder);
            }
            Err(e) => reasons.push(format!("{what}: {e}")),
        }
    }
    if decoders.is_empty() {
        return Err(reasons.join("; "));
    }
    out.insert("decoder".into(), Json::String(decoders.join(",")));
    Ok(Json::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bthome_and_explains_refusals() {
        let e = Element::service("fcd2=40000902ca0903bf13").unwrap();
        let j = decode_elements(&[e], None, None).unwrap();
        assert_eq!(j["temperature"], 25.06);
        assert_eq!(j["humidity"], 50.55);
        assert_eq!(j["decoder"], "bthome_v2");
        let e = Element::manufacturer("0x0499=0512FC").unwrap();
        let err = decode_elements(&[e], None, None).unwrap_err();
        assert!(err.contains("manufacturer data 0x0499: malformed"), "{err}");
        assert!(Element::service("zz=00").is_err());
        assert!(Element::service("fcd2").is_err());
        assert!(Element::manufacturer("1177=0g").is_err());
        assert_eq!(
            Element::manufacturer("1177=0501").unwrap(),
            Element::Manufacturer {
                company: 0x0499,
                data: vec![5, 1]
            }
        );
    }
}

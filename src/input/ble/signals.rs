//! BlueZ's advertisement signals, read in bulk from a D-Bus connection that no runtime
//! watches, and parsed in place.
//!
//! Every advertisement BlueZ reports is a `PropertiesChanged` signal on a device object (a
//! new device: `InterfacesAdded`). Served through an async connection, each signal wakes the
//! BLE thread, is copied into a map of boxed values and converted again before the decoder
//! sees its bytes: at a few hundred adverts a second that cost more CPU than everything else
//! the gateway does. Here the session's own blocking connection subscribes to those signals
//! (only `org.bluez.Device1` changes under the scanned adapter), is never registered with the
//! runtime's reactor, and is drained on a timer; the service and manufacturer data are read
//! as slices of the message itself.
//!
//! **Invariant:** [`drain`] never blocks: it reads what the socket holds (at most
//! `max_messages`) and returns. Signals wait in the socket and in the bus daemon meanwhile.

use crate::ble::advert::Payload;
use dbus::arg::{ArgType, Iter};
use dbus::blocking::Connection;
use dbus::{Message, MessageType, Path};

const DEVICE_IFACE: &str = "org.bluez.Device1";

/// Subscribes `bus` to the device signals of the adapter at `adapter_path` (`/org/bluez/hci0`).
pub fn watch(bus: &Connection, adapter_path: &str) -> Result<(), dbus::Error> {
    bus.add_match_no_cb(&format!(
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',\
         member='PropertiesChanged',arg0='{DEVICE_IFACE}',path_namespace='{adapter_path}'"
    ))?;
    bus.add_match_no_cb(
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager',\
         member='InterfacesAdded'",
    )
}

/// The connection to the bus is gone.
#[derive(Debug)]
pub struct Closed;

/// Hands every message that has arrived on `bus` to `each`, without waiting for more; at most
/// `max_messages`. Returns how many there were.
pub fn drain(
    bus: &Connection,
    max_messages: usize,
    mut each: impl FnMut(Message),
) -> Result<usize, Closed> {
    let channel = bus.channel();
    let mut n = 0;
    while n < max_messages {
        // libdbus reads at most 2 KiB per call: go on while a call yields whole messages.
        channel
            .read_write(Some(std::time::Duration::ZERO))
            .map_err(|()| Closed)?;
        let before = n;
        while let Some(m) = channel.pop_message() {
            each(m);
            n += 1;
        }
        if n == before {
            break;
        }
    }
    Ok(n)
}

/// What one signal says about one device.
#[derive(Debug, Default)]
pub struct Update<'m> {
    /// The device's object path (`/org/bluez/hci0/dev_A4_C1_38_8E_11_22`).
    pub path: Path<'m>,
    /// `InterfacesAdded`: BlueZ has just found the device.
    pub discovered: bool,
    /// The `Address` property (given when a device is discovered).
    pub address: Option<&'m str>,
    /// The `Name` property (when the device says it).
    pub name: Option<&'m str>,
    pub rssi: Option<i16>,
    /// Service data (UUID as text) and manufacturer data, in signal order.
    pub payloads: Vec<Payload<'m>>,
}

/// Parses a device signal; `None` for anything else (or a property of an unexpected type,
/// which is skipped).
pub fn parse(msg: &Message) -> Option<Update<'_>> {
    if msg.msg_type() != MessageType::Signal {
        return None;
    }
    let member = msg.member()?;
    let mut args = msg.iter_init();
    match &*member {
        "PropertiesChanged" => {
            let iface: &str = args.get()?;
            if iface != DEVICE_IFACE || !args.next() {
                return None;
            }
            let mut u = Update {
                path: msg.path()?,
                ..Update::default()
            };
            properties(args.recurse(ArgType::Array)?, &mut u);
            Some(u)
        }
        "InterfacesAdded" => {
            let path: Path = args.get()?;
            if !args.next() {
                return None;
            }
            let mut ifaces = args.recurse(ArgType::Array)?;
            loop {
                let mut entry = ifaces.recurse(ArgType::DictEntry)?;
                let name: &str = entry.get()?;
                if name == DEVICE_IFACE && entry.next() {
                    let mut u = Update {
                        path,
                        discovered: true,
                        ..Update::default()
                    };
                    properties(entry.recurse(ArgType::Array)?, &mut u);
                    return Some(u);
                }
                if !ifaces.next() {
                    return None;
                }
            }
        }
        _ => None,
    }
}

/// The devices in a reply to `ObjectManager.GetManagedObjects` (`a{oa{sa{sv}}}`), each as
/// an update that discovers it with its current properties.
pub fn managed(msg: &Message) -> Vec<Update<'_>> {
    let mut out = Vec::new();
    let mut args = msg.iter_init();
    let Some(mut objects) = args.recurse(ArgType::Array) else {
        return out;
    };
    while objects.arg_type() == ArgType::DictEntry {
        if let Some(mut object) = objects.recurse(ArgType::DictEntry) {
            let path: Option<Path> = object.get();
            if let (Some(path), true) = (path, object.next()) {
                if let Some(ifaces) = object.recurse(ArgType::Array) {
                    device_of(path, ifaces, &mut out);
                }
            }
        }
        if !objects.next() {
            break;
        }
    }
    out
}

/// The `org.bluez.Device1` properties among the interfaces (`a{sa{sv}}`) of `path`.
fn device_of<'m>(path: Path<'m>, mut ifaces: Iter<'m>, out: &mut Vec<Update<'m>>) {
    while ifaces.arg_type() == ArgType::DictEntry {
        if let Some(mut entry) = ifaces.recurse(ArgType::DictEntry) {
            let name: Option<&str> = entry.get();
            if name == Some(DEVICE_IFACE) && entry.next() {
                if let Some(props) = entry.recurse(ArgType::Array) {
                    let mut u = Update {
                        path,
                        discovered: true,
                        ..Update::default()
                    };
                    properties(props, &mut u);
                    out.push(u);
                    return;
                }
            }
        }
        if !ifaces.next() {
            return;
        }
    }
}

/// Reads the `a{sv}` of device properties that matter here.
fn properties<'m>(mut dict: Iter<'m>, u: &mut Update<'m>) {
    while dict.arg_type() == ArgType::DictEntry {
        if let Some(mut entry) = dict.recurse(ArgType::DictEntry) {
            let key: Option<&str> = entry.get();
            if let (Some(key), true) = (key, entry.next()) {
                if let Some(value) = entry.recurse(ArgType::Variant) {
                    property(key, value, u);
                }
            }
        }
        if !dict.next() {
            break;
        }
    }
}

fn property<'m>(key: &str, mut value: Iter<'m>, u: &mut Update<'m>) {
    match key {
        "RSSI" => u.rssi = value.get(),
        "Address" => u.address = value.get(),
        "Name" => u.name = value.get(),
        "ServiceData" => each_entry(value, |mut e| {
            let uuid: &str = e.get()?;
            let uuid = uuid::Uuid::parse_str(uuid).ok()?.as_u128();
            e.next();
            let data: &[u8] = e.recurse(ArgType::Variant)?.get()?;
            u.payloads.push(Payload::Service { uuid, data });
            Some(())
        }),
        "ManufacturerData" => each_entry(value, |mut e| {
            let company: u16 = e.get()?;
            e.next();
            let data: &[u8] = e.recurse(ArgType::Variant)?.get()?;
            u.payloads.push(Payload::Manufacturer { company, data });
            Some(())
        }),
        _ => {}
    }
}

/// Calls `f` on each entry of a dictionary (an array of dict entries); a malformed entry is
/// skipped.
fn each_entry<'m>(mut array: Iter<'m>, mut f: impl FnMut(Iter<'m>) -> Option<()>) {
    if array.arg_type() != ArgType::Array {
        return;
    }
    let Some(mut entries) = array.recurse(ArgType::Array) else {
        return;
    };
    while entries.arg_type() == ArgType::DictEntry {
        if let Some(entry) = entries.recurse(ArgType::DictEntry) {
            let _ = f(entry);
        }
        if !entries.next() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ble::values::uuid_from_u16;
    use dbus::arg::{PropMap, RefArg, Variant};
    use std::collections::HashMap;

    const DEV: &str = "/org/bluez/hci0/dev_A4_C1_38_8E_11_22";
    const BTHOME: &str = "0000fcd2-0000-1000-8000-00805f9b34fb";

    fn props() -> PropMap {
        let mut service: HashMap<String, Variant<Box<dyn RefArg>>> = HashMap::new();
        service.insert(BTHOME.into(), Variant(Box::new(vec![0x40u8, 0x00, 0x01])));
        let mut maker: HashMap<u16, Variant<Box<dyn RefArg>>> = HashMap::new();
        maker.insert(0x0499, Variant(Box::new(vec![5u8, 6])));
        let mut p: PropMap = HashMap::new();
        p.insert("RSSI".into(), Variant(Box::new(-61i16)));
        p.insert("ServiceData".into(), Variant(Box::new(service)));
        p.insert("ManufacturerData".into(), Variant(Box::new(maker)));
        p.insert("Connected".into(), Variant(Box::new(false)));
        p
    }

    fn changed(iface: &str, p: PropMap) -> Message {
        Message::new_signal(DEV, "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .unwrap()
            .append3(iface, p, Vec::<String>::new())
    }

    fn check_payloads(u: &Update) {
        assert_eq!(u.rssi, Some(-61));
        let mut service = 0;
        let mut maker = 0;
        for p in &u.payloads {
            match *p {
                Payload::Service { uuid, data } => {
                    assert_eq!(uuid, uuid_from_u16(0xfcd2));
                    assert_eq!(data, &[0x40, 0x00, 0x01]);
                    service += 1;
                }
                Payload::Manufacturer { company, data } => {
                    assert_eq!((company, data), (0x0499, &[5u8, 6][..]));
                    maker += 1;
                }
            }
        }
        assert_eq!((service, maker), (1, 1));
    }

    #[test]
    fn properties_changed_gives_rssi_and_payloads_as_slices() {
        let msg = changed(DEVICE_IFACE, props());
        let u = parse(&msg).expect("a device update");
        assert_eq!(&*u.path, DEV);
        assert!(!u.discovered);
        check_payloads(&u);
    }

    #[test]
    fn other_interfaces_and_signals_are_ignored() {
        assert!(parse(&changed("org.bluez.Adapter1", props())).is_none());
        let other = Message::new_signal("/", "org.freedesktop.DBus", "NameOwnerChanged")
            .unwrap()
            .append3("org.bluez", "", ":1.2");
        assert!(parse(&other).is_none());
    }

    #[test]
    fn interfaces_added_is_a_discovery_with_the_address() {
        let mut p = props();
        p.insert(
            "Address".into(),
            Variant(Box::new("A4:C1:38:8E:11:22".to_string())),
        );
        let mut ifaces: HashMap<String, PropMap> = HashMap::new();
        ifaces.insert("org.freedesktop.DBus.Properties".into(), HashMap::new());
        ifaces.insert(DEVICE_IFACE.into(), p);
        let msg = Message::new_signal("/", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded")
            .unwrap()
            .append2(Path::from(DEV), ifaces);
        let u = parse(&msg).expect("a device update");
        assert!(u.discovered);
        assert_eq!(u.address, Some("A4:C1:38:8E:11:22"));
        check_payloads(&u);
    }

    #[test]
    fn managed_objects_list_the_devices_with_their_properties() {
        let mut p = props();
        p.insert("Name".into(), Variant(Box::new("ATC_8E1122".to_string())));
        let mut ifaces: HashMap<String, PropMap> = HashMap::new();
        ifaces.insert(DEVICE_IFACE.into(), p);
        let mut adapter: HashMap<String, PropMap> = HashMap::new();
        adapter.insert("org.bluez.Adapter1".into(), HashMap::new());
        let mut objects: HashMap<Path, HashMap<String, PropMap>> = HashMap::new();
        objects.insert(Path::from(DEV), ifaces);
        objects.insert(Path::from("/org/bluez/hci0"), adapter);
        let mut call = Message::new_method_call(
            "org.bluez",
            "/",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
        )
        .unwrap();
        call.set_serial(1); // as if sent: a reply needs the call's serial
        let reply = call.method_return().append1(objects);
        let devices = managed(&reply);
        assert_eq!(devices.len(), 1);
        assert_eq!(&*devices[0].path, DEV);
        assert_eq!(devices[0].name, Some("ATC_8E1122"));
        check_payloads(&devices[0]);
    }

    #[test]
    fn wrongly_typed_properties_are_skipped() {
        // dbusmock's AddDevice gives ServiceData and ManufacturerData other types.
        let mut p: PropMap = HashMap::new();
        p.insert("RSSI".into(), Variant(Box::new(-61i32)));
        p.insert("ServiceData".into(), Variant(Box::new(vec![1u8, 2])));
        let mut maker: HashMap<u16, Variant<Box<dyn RefArg>>> = HashMap::new();
        maker.insert(0x0499, Variant(Box::new("text".to_string())));
        p.insert("ManufacturerData".into(), Variant(Box::new(maker)));
        let msg = changed(DEVICE_IFACE, p);
        let u = parse(&msg).expect("a device update");
        assert_eq!(u.rssi, None);
        assert!(u.payloads.is_empty());
    }
}

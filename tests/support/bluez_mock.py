'''BlueZ mock for sensorgate's tests and benchmarks: python-dbusmock's bluez5 template plus
what btleplug needs for advertisements and GATT, driven through org.bluez.Mock methods.

Run as: /usr/bin/python3 -m dbusmock --system --template tests/support/bluez_mock.py

Additions to bluez5:
- AdvertiseService / AdvertiseManufacturer: create the device if needed, then set its RSSI
  and ServiceData / ManufacturerData with Properties.Set (each emits PropertiesChanged,
  which BlueZ does for every new advertisement).
- DiscoverService: a device BlueZ finds for the first time, its first advertisement's
  service data among the properties of InterfacesAdded (as bluetoothd sends it).
- AddGattDevice: a device with one primary service holding one read/notify characteristic;
  its Connect sets Connected and then ServicesResolved, as bluetoothd does.
- SetGattValue: a new characteristic value (a notification when subscribed).
- StartAdverts: COUNT BTHome devices advertising HZ times a second each for SECONDS, from
  a GLib timer inside this process (the CPU benchmark's load).
- Introspect with child <node>s after the interfaces (bluez-async's parser needs that order;
  dbusmock appends property-only interfaces after the nodes).
'''

import xml.etree.ElementTree as ElementTree

import dbus
from gi.repository import GLib

from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates.bluez5 import (  # noqa: F401  (dbusmock collects these by name)
    BUS_NAME, MAIN_OBJ, SYSTEM_BUS, IS_OBJECT_MANAGER, BLUEZ_MOCK_IFACE, DEVICE_IFACE,
    AddAdapter, RemoveAdapter, RemoveAdapterWithDevices, AddDevice, Disconnect, load,
)
from dbusmock.templates.bluez5 import Connect as device_connect, Pair as device_pair

GATT_SERVICE_IFACE = 'org.bluez.GattService1'
GATT_CHAR_IFACE = 'org.bluez.GattCharacteristic1'
BTHOME_UUID = '0000fcd2-0000-1000-8000-00805f9b34fb'


def nodes_last(obj):
    '''Gives OBJ an Introspect whose XML lists child nodes after every interface.'''
    def introspect(self):
        xml = mockobject.DBusMockObject.Introspect(self, self.path, self.connection)
        tree = ElementTree.fromstring(xml)
        nodes = [n for n in tree if n.tag == 'node']
        for n in nodes:
            tree.remove(n)
            tree.append(n)
        return ElementTree.tostring(tree, encoding='unicode')
    obj.AddMethods('org.freedesktop.DBus.Introspectable', [('Introspect', '', 's', introspect)])


def device(adapter, address):
    path = f'/org/bluez/{adapter}/dev_' + address.replace(':', '_').upper()
    if path not in mockobject.objects:
        mockobject.objects['/'].AddDevice(adapter, address, 'mock ' + address)
        nodes_last(mockobject.objects[path])
    return mockobject.objects[path]


def set_rssi(dev, rssi):
    if rssi != 0:
        dev.Set(DEVICE_IFACE, 'RSSI', dbus.Int16(rssi, variant_level=1))


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='sssayn', out_signature='')
def AdvertiseService(self, adapter, address, uuid, data, rssi):
    dev = device(adapter, address)
    set_rssi(dev, rssi)
    value = dbus.Dictionary({uuid: dbus.Array(data, signature='y', variant_level=1)},
                            signature='sv', variant_level=1)
    dev.Set(DEVICE_IFACE, 'ServiceData', value)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='ssqayn', out_signature='')
def AdvertiseManufacturer(self, adapter, address, company, data, rssi):
    dev = device(adapter, address)
    set_rssi(dev, rssi)
    value = dbus.Dictionary({dbus.UInt16(company): dbus.Array(data, signature='y', variant_level=1)},
                            signature='qv', variant_level=1)
    dev.Set(DEVICE_IFACE, 'ManufacturerData', value)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='sssayn', out_signature='')
def DiscoverService(self, adapter, address, uuid, data, rssi):
    path = f'/org/bluez/{adapter}/dev_' + address.replace(':', '_').upper()
    properties = {
        'Address': dbus.String(address, variant_level=1),
        'AddressType': dbus.String('public', variant_level=1),
        'Name': dbus.String('mock ' + address, variant_level=1),
        'Alias': dbus.String('mock ' + address, variant_level=1),
        'Adapter': dbus.ObjectPath(f'/org/bluez/{adapter}', variant_level=1),
        'Paired': dbus.Boolean(False, variant_level=1),
        'Connected': dbus.Boolean(False, variant_level=1),
        'UUIDs': dbus.Array([], signature='s', variant_level=1),
        'RSSI': dbus.Int16(rssi, variant_level=1),
        'ServiceData': dbus.Dictionary({uuid: dbus.Array(data, signature='y', variant_level=1)},
                                       signature='sv', variant_level=1),
    }
    self.AddObject(path, DEVICE_IFACE, properties, [
        ('Connect', '', '', device_connect),
        ('Disconnect', '', '', Disconnect),
        ('Pair', '', '', device_pair),
    ])
    dev = mockobject.objects[path]
    dev.paired = False
    dev.connected = False
    nodes_last(dev)
    mockobject.objects['/'].EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                                       [dbus.ObjectPath(path), {DEVICE_IFACE: properties}])


def set_connected(dev, up):
    '''bluetoothd's order: Connected, then (services discovered) ServicesResolved; the
    reverse when the connection ends.'''
    dev.connected = up
    props = ('Connected', 'ServicesResolved') if up else ('ServicesResolved', 'Connected')
    for prop in props:
        dev.props[DEVICE_IFACE][prop] = dbus.Boolean(up, variant_level=1)
        dev.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                       [DEVICE_IFACE, {prop: dbus.Boolean(up, variant_level=1)}, []])


def Connect(dev):
    set_connected(dev, True)


def GattDisconnect(dev):
    set_connected(dev, False)


def ReadValue(char, _options):
    return char.props[GATT_CHAR_IFACE]['Value']


def StartNotify(char):
    char.Set(GATT_CHAR_IFACE, 'Notifying', dbus.Boolean(True, variant_level=1))


def StopNotify(char):
    char.Set(GATT_CHAR_IFACE, 'Notifying', dbus.Boolean(False, variant_level=1))


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='ssssay', out_signature='')
def AddGattDevice(self, adapter, address, service, characteristic, value):
    dev = device(adapter, address)
    dev.AddMethods(DEVICE_IFACE, [('Connect', '', '', Connect), ('Disconnect', '', '', GattDisconnect)])
    svc_path = dev.path + '/service0010'
    char_path = svc_path + '/char0011'
    svc_props = {
        'UUID': dbus.String(service, variant_level=1),
        'Primary': dbus.Boolean(True, variant_level=1),
        'Device': dbus.ObjectPath(dev.path, variant_level=1),
        'Includes': dbus.Array([], signature='o', variant_level=1),
        'Handle': dbus.UInt16(0x10, variant_level=1),
    }
    char_props = {
        'UUID': dbus.String(characteristic, variant_level=1),
        'Service': dbus.ObjectPath(svc_path, variant_level=1),
        'Value': dbus.Array(value, signature='y', variant_level=1),
        'Notifying': dbus.Boolean(False, variant_level=1),
        'Flags': dbus.Array(['read', 'notify'], signature='s', variant_level=1),
        'Handle': dbus.UInt16(0x11, variant_level=1),
        'MTU': dbus.UInt16(23, variant_level=1),
    }
    self.AddObject(svc_path, GATT_SERVICE_IFACE, svc_props, [])
    self.AddObject(char_path, GATT_CHAR_IFACE, char_props, [
        ('ReadValue', 'a{sv}', 'ay', ReadValue),
        ('WriteValue', 'aya{sv}', '', ''),
        ('StartNotify', '', '', StartNotify),
        ('StopNotify', '', '', StopNotify),
    ])
    for path in (svc_path, char_path):
        nodes_last(mockobject.objects[path])
    manager = mockobject.objects['/']
    manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                       [dbus.ObjectPath(svc_path), {GATT_SERVICE_IFACE: svc_props}])
    manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                       [dbus.ObjectPath(char_path), {GATT_CHAR_IFACE: char_props}])


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='ssay', out_signature='')
def SetGattValue(self, adapter, address, value):
    path = f'/org/bluez/{adapter}/dev_' + address.replace(':', '_').upper() + '/service0010/char0011'
    mockobject.objects[path].Set(GATT_CHAR_IFACE, 'Value', dbus.Array(value, signature='y', variant_level=1))


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature='sudd', out_signature='')
def StartAdverts(self, adapter, count, hz, seconds):
    '''COUNT BTHome devices (AA:00:00:00:xx:xx), each advertising HZ times a second, for
    SECONDS: one GLib timer round-robins over them. Each advertisement has a new packet id
    and temperature, so every one is a new reading for the gateway.'''
    addresses = [f'AA:00:00:00:{i >> 8:02X}:{i & 0xff:02X}' for i in range(count)]
    devs = [device(adapter, a) for a in addresses]
    total = int(count * hz * seconds)
    state = {'sent': 0}
    interval_ms = max(1, int(round(1000.0 / (count * hz))))

    def tick():
        n = state['sent']
        if n >= total:
            return False
        dev = devs[n % count]
        packet = (n // count) & 0xff
        temp = 2000 + (n % 500)
        data = [0x40, 0x00, packet, 0x02, temp & 0xff, temp >> 8]
        dev.Set(DEVICE_IFACE, 'ServiceData', dbus.Dictionary(
            {BTHOME_UUID: dbus.Array(data, signature='y', variant_level=1)},
            signature='sv', variant_level=1))
        state['sent'] = n + 1
        return True

    GLib.timeout_add(interval_ms, tick)

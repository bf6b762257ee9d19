"""A Modbus server for the tests: pymodbus (a Modbus implementation we did not write) serving
the slaves a JSON spec describes, over RTU on a serial device or over TCP.

Usage: modbus_server.py SPEC.json (rtu DEVICE BAUD | tcp PORT) CONTROL_DIR

The spec: {"slaves": [{"unit": 1, "size": 100, "holding": [[addr, type, order, value], ...],
"input": [...], "coils": [[addr, true], ...], "discrete": [...]}]}. Each value is packed with
struct (big-endian bytes of its type), cut into 16-bit registers, then put in the named
order: cdab reverses the registers, badc swaps the two bytes of each, dcba does both. A
register at or past `size` does not exist (an illegal data address exception).

While CONTROL_DIR/silent-<unit> exists, that unit does not answer at all (a slave that
vanished); while CONTROL_DIR/slow-<unit> exists, the server answers that unit only after
the number of seconds the file holds (a late answer; the whole server waits meanwhile);
while CONTROL_DIR/corrupt-<unit> exists, that unit's RTU answers carry a wrong CRC. The server writes CONTROL_DIR/ready once it serves.
"""

import asyncio
import json
import os
import struct
import sys
import time

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.exceptions import NoSuchSlaveException
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q",
           "i64": ">q", "f32": ">f", "f64": ">d"}


def registers(ty, order, value):
    raw = struct.pack(FORMATS[ty], value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("cdab", "dcba"):
        words.reverse()
    if order in ("badc", "dcba"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def slave(spec):
    size = spec.get("size", 100)
    tables = {}
    for name in ("holding", "input"):
        values = [0] * size
        for addr, ty, order, value in spec.get(name, []):
            for k, w in enumerate(registers(ty, order, value)):
                values[addr + k] = w
        tables[name] = ModbusSequentialDataBlock(0, values)
    for name in ("coils", "discrete"):
        values = [False] * size
        for addr, on in spec.get(name, []):
            values[addr] = bool(on)
        tables[name] = ModbusSequentialDataBlock(0, values)
    return ModbusSlaveContext(
        hr=tables["holding"], ir=tables["input"], co=tables["coils"],
        di=tables["discrete"], zero_mode=True)


class Switchable(ModbusServerContext):
    """A unit disappears while its control file exists."""

    def __init__(self, slaves, control):
        super().__init__(slaves=slaves, single=False)
        self.control = control

    def __getitem__(self, unit):
        if os.path.exists(os.path.join(self.control, f"silent-{unit}")):
            raise NoSuchSlaveException(f"unit {unit} is silent")
        slow = os.path.join(self.control, f"slow-{unit}")
        if os.path.exists(slow):
            time.sleep(float(open(slow).read()))
        return super().__getitem__(unit)


def corrupter(control):
    """A response manipulator: the RTU frame of a unit whose corrupt-<unit> file exists is
    sent with its CRC inverted."""

    def manipulate(response):
        if not os.path.exists(os.path.join(control, f"corrupt-{response.unit_id}")):
            return response, False
        frame = bytes([response.unit_id, response.function_code]) + response.encode()
        crc = 0xFFFF
        for b in frame:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return frame + struct.pack("<H", crc ^ 0xFFFF), True

    return manipulate


async def main():
    spec = json.load(open(sys.argv[1]))
    mode = sys.argv[2]
    control = sys.argv[-1]
    context = Switchable({s["unit"]: slave(s) for s in spec["slaves"]}, control)
    ready = os.path.join(control, "ready")
    if mode == "rtu":
        # A port that vanishes (socat killed) is opened again when it is back.
        server = await StartAsyncSerialServer(
            context=context, framer=ModbusRtuFramer, port=sys.argv[3],
            baudrate=int(sys.argv[4]), ignore_missing_slaves=True, defer_start=True,
            auto_reconnect=True, reconnect_delay=0.2,
            response_manipulator=corrupter(control))
        await server.start()
    else:
        server = await StartAsyncTcpServer(
            context=context, address=("127.0.0.1", int(sys.argv[3])),
            ignore_missing_slaves=True, defer_start=True)
    asyncio.get_running_loop().call_later(0.2, lambda: open(ready, "w").close())
    await server.serve_forever()


asyncio.run(main())

#!/usr/bin/python3
"""What pynmea2 (an NMEA parser we did not write) reads in each sentence of a log, in the
gateway's field names, for tests/nmea.rs to compare with the gateway's decoder.

Usage: nmea_pynmea2.py LOG. Comment lines (`#`) and blank lines are skipped, as the test
skips them. Prints one JSON object per remaining line: {"line", "outcome", "fields"}, where
outcome is "ok", "bad" (checksum missing or wrong, or pynmea2 cannot parse it),
"proprietary" or "unsupported" (AIS `!` sentences, types the gateway does not decode).
The values come from pynmea2's fields; only the names and units are the gateway's.
"""
import json
import sys

import pynmea2

DECODED = {"GGA", "RMC", "VTG", "GLL", "GSA", "GSV", "ZDA", "HDT", "MWV", "DPT", "DBT", "MTW", "XDR"}


def num(v):
    return None if v in (None, "") else float(v)


def whole(v):
    if v in (None, ""):
        return None
    return int(v) if str(v).isdigit() else float(v)


def integer(v):
    return None if v in (None, "") else int(v)


def text(v):
    return None if v in (None, "") else str(v)


def time_text(t):
    if t is None:
        return None
    s = "%02d:%02d:%02d" % (t.hour, t.minute, t.second)
    ms = round(t.microsecond / 1000)
    return s + (".%03d" % ms if ms else "")


def at(msg, i):
    return msg.data[i] if i < len(msg.data) else ""


def position(out, msg):
    if msg.lat:
        out["lat"] = msg.latitude
    if msg.lon:
        out["lon"] = msg.longitude


def date_time(out, date, t):
    if date is None:
        return
    out["date"] = date.isoformat()
    if t is not None:
        out["utc"] = "%sT%sZ" % (date.isoformat(), time_text(t))


def fields(msg):
    out = {"talker": msg.talker, "sentence": msg.sentence_type}
    k = msg.sentence_type
    if k == "GGA":
        out["time_utc"] = time_text(msg.timestamp)
        position(out, msg)
        out["fix_quality"] = msg.gps_qual
        out["satellites"] = integer(msg.num_sats)
        out["hdop"] = num(msg.horizontal_dil)
        out["altitude_m"] = msg.altitude
        out["geoid_separation_m"] = num(msg.geo_sep)
        out["dgps_age_s"] = num(msg.age_gps_data)
        out["dgps_station"] = text(msg.ref_station_id)
    elif k == "RMC":
        out["time_utc"] = time_text(msg.timestamp)
        out["status"] = text(msg.status)
        position(out, msg)
        out["speed_kn"] = msg.spd_over_grnd
        out["course_deg"] = msg.true_course
        date_time(out, msg.datestamp, msg.timestamp)
        if msg.mag_variation:
            sign = -1.0 if msg.mag_var_dir == "W" else 1.0
            out["mag_variation_deg"] = sign * float(msg.mag_variation)
        out["mode"] = text(at(msg, 11))
        out["nav_status"] = text(at(msg, 12))
    elif k == "VTG":
        out["course_deg"] = msg.true_track
        out["course_magnetic_deg"] = num(msg.mag_track)
        out["speed_kn"] = num(msg.spd_over_grnd_kts)
        out["speed_kmh"] = msg.spd_over_grnd_kmph
        out["mode"] = text(msg.faa_mode)
    elif k == "GLL":
        position(out, msg)
        out["time_utc"] = time_text(msg.timestamp)
        out["status"] = text(msg.status)
        out["mode"] = text(msg.faa_mode)
    elif k == "GSA":
        out["selection"] = text(msg.mode)
        out["fix_type"] = integer(msg.mode_fix_type)
        ids = [getattr(msg, "sv_id%02d" % i) for i in range(1, 13)]
        ids = [i for i in ids if i]
        out["satellites"] = len(ids)
        out["satellite_ids"] = text(",".join(ids))
        out["pdop"] = num(msg.pdop)
        out["hdop"] = num(msg.hdop)
        out["vdop"] = num(msg.vdop)
        # NMEA 4.10's system id; a decimal there (a SiRF-TriG's BDGSA) is not one.
        out["system_id"] = integer(at(msg, 17)) if at(msg, 17).isdigit() else None
    elif k == "GSV":
        out["messages"] = integer(msg.num_messages)
        out["message"] = integer(msg.msg_num)
        out["satellites_in_view"] = integer(msg.num_sv_in_view)
        # NMEA 4.10 appends a signal id that pynmea2 (1.15) reads as the next PRN.
        signal = (len(msg.data) - 3) % 4 == 1
        end = len(msg.data) - (1 if signal else 0)
        for n in range(1, 5):
            if 3 + 4 * (n - 1) >= end:
                break
            out["sv%d_prn" % n] = integer(getattr(msg, "sv_prn_num_%d" % n))
            out["sv%d_elevation_deg" % n] = whole(getattr(msg, "elevation_deg_%d" % n))
            out["sv%d_azimuth_deg" % n] = whole(getattr(msg, "azimuth_%d" % n))
            out["sv%d_snr_db" % n] = whole(getattr(msg, "snr_%d" % n))
        if signal:
            out["signal_id"] = text(msg.data[-1])
    elif k == "ZDA":
        out["time_utc"] = time_text(msg.timestamp)
        date = msg.datestamp if msg.year is not None else None
        date_time(out, date, msg.timestamp)
        out["local_zone_h"] = msg.local_zone
        out["local_zone_min"] = msg.local_zone_minutes
    elif k == "HDT":
        out["heading_deg"] = num(msg.heading)
    elif k == "MWV":
        out["wind_angle_deg"] = num(msg.wind_angle)
        out["reference"] = text(msg.reference)
        unit = {"N": "kn", "M": "ms", "K": "kmh", "S": "mph"}.get(msg.wind_speed_units)
        if unit:
            out["wind_speed_" + unit] = num(msg.wind_speed)
        out["status"] = text(msg.status)
    elif k == "DPT":
        out["depth_m"] = num(msg.depth)
        out["offset_m"] = num(msg.offset)
        out["max_range_m"] = num(msg.range)
    elif k == "DBT":
        out["depth_ft"] = num(msg.depth_feet)
        out["depth_m"] = num(msg.depth_meters)
        out["depth_fathoms"] = num(msg.depth_fathoms)
    elif k == "MTW":
        out["water_temp_c"] = num(msg.temperature)
    elif k == "XDR":
        for i in range(msg.num_transducers):
            t = msg.get_transducer(i)
            if t.value == "":
                continue
            name = t.id or "xdr%d" % (i + 1)
            if name in out:
                name = next("%s_%d" % (name, j) for j in range(2, 99) if "%s_%d" % (name, j) not in out)
            out[name] = float(t.value)
            if t.units:
                out[name + "_unit"] = t.units
    return {k: v for k, v in out.items() if v is not None}


def outcome(line):
    if line.startswith("!"):
        body, _, sum_ = line[1:].rpartition("*")
        good = len(sum_) == 2 and pynmea2.NMEASentence.checksum(body) == int(sum_, 16)
        return ("unsupported" if good else "bad"), {}
    try:
        msg = pynmea2.parse(line, check=True)
    except pynmea2.SentenceTypeError:
        return "unsupported", {}
    except (pynmea2.ParseError, ValueError):
        return "bad", {}
    if isinstance(msg, pynmea2.ProprietarySentence):
        return "proprietary", {}
    if not isinstance(msg, pynmea2.TalkerSentence) or msg.sentence_type not in DECODED:
        return "unsupported", {}
    return "ok", fields(msg)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            result, values = outcome(line)
            print(json.dumps({"line": line, "outcome": result, "fields": values}))


if __name__ == "__main__":
    main()

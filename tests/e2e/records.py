#!/usr/bin/env python3
"""Acknowledged records against a replica: the e2e guest's RPO check.

The guest's workload (guest/recwriter.c) writes record n to slot n % slots of its disk with
O_DIRECT|O_DSYNC and prints "VMHA-ACK n" on its serial console once the write returned. A
record the guest saw acknowledged must be on a replica: its slot holds record n, or a later
record of the same slot (n + k * slots, written after it). Anything else is a lost write.

  records.py --image IMG --console LOG [--console LOG ...] [--slots 1024] [--json]

prints the acknowledged count, the highest record, and every missing record; exit status 0 when
none is missing, 1 when some are, 2 when a file cannot be read.
"""

import argparse
import json
import re
import sys
import zlib

RECORD = 4096
CRC_AT = 4092
ACK = re.compile(rb"VMHA-ACK (\d+)")
BOOT = re.compile(rb"VMHA-BOOT (\d+) next (\d+)")


def acknowledged(console_texts):
    """The set of record numbers the consoles show acknowledged."""
    acked = set()
    for text in console_texts:
        acked.update(int(m.group(1)) for m in ACK.finditer(text))
    return acked


def boots(text):
    return [(int(m.group(1)), int(m.group(2))) for m in BOOT.finditer(text)]


def read_record(image, slot):
    """The record number in a slot, or None when the slot holds no valid record."""
    image.seek(slot * RECORD)
    r = image.read(RECORD)
    if len(r) != RECORD or r[:8] != b"VMHAREC1":
        return None
    if zlib.crc32(r[:CRC_AT]) != int.from_bytes(r[CRC_AT:], "little"):
        return None
    return int.from_bytes(r[8:16], "little")


def missing(image_path, acked, slots=1024):
    """The acknowledged records the image does not hold (nor a later write of their slot)."""
    lost = []
    with open(image_path, "rb") as image:
        seen = {}
        for n in sorted(acked):
            slot = n % slots
            if slot not in seen:
                seen[slot] = read_record(image, slot)
            have = seen[slot]
            if have is None or have < n or have % slots != slot:
                lost.append(n)
    return lost


def highest(image_path, slots=1024):
    with open(image_path, "rb") as image:
        found = [read_record(image, s) for s in range(slots)]
    return max((n for n in found if n is not None), default=0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True)
    p.add_argument("--console", action="append", required=True)
    p.add_argument("--slots", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    try:
        texts = [open(c, "rb").read() for c in a.console]
        acked = acknowledged(texts)
        lost = missing(a.image, acked, a.slots)
        top = highest(a.image, a.slots)
    except OSError as e:
        print(f"records: {e}", file=sys.stderr)
        return 2
    result = {"acknowledged": len(acked), "highest_acknowledged": max(acked, default=0),
              "highest_on_image": top, "missing": lost}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{len(acked)} records acknowledged (highest {result['highest_acknowledged']}), "
              f"highest on the image {top}, {len(lost)} missing"
              + (f": {lost[:20]}{' ...' if len(lost) > 20 else ''}" if lost else ""))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

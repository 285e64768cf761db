#!/usr/bin/env python3
"""A stand-in for the LVM tools the lvm_thin driver runs, for machines
without device-mapper. Installed under the tools' names first in PATH by tests/storage_lvm.rs.

* Tools: lvs, lvcreate (--thin, --snapshot), lvremove, lvrename, lvchange.
* State: $FAKE_LVM_STATE, a JSON list of LVs ({vg, pool, name, size, data, attr, origin,
  meta_size, meta_pct}); a thin pool has attr "twi-…" and pool "".
* Every call is appended to $FAKE_LVM_LOG as one JSON array (argv with the tool's name first),
  so a test can assert the exact command lines.
* Output and errors in LVM's own formats and exit codes (5 for a failed command). Any command
  line the driver is not meant to run is refused with exit 3 and a message naming it.
* $FAKE_LVM_FAIL=<tool> makes that tool fail as LVM does when a thin pool is full.
"""
import json
import os
import sys

LVS_ARGS = ["--noheadings", "-o",
            "vg_name,pool_lv,name,lv_size,data_percent,lv_attr,origin,lv_metadata_size,metadata_percent",
            "--units", "b", "--separator", ";"]


def refuse(why):
    sys.stderr.write("fake-lvm: unexpected command line (%s): %r\n" % (why, sys.argv))
    sys.exit(3)


def fail(msg):
    sys.stderr.write("  " + msg + "\n")
    sys.exit(5)


def main():
    tool = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    state_path = os.environ["FAKE_LVM_STATE"]
    with open(os.environ["FAKE_LVM_LOG"], "a") as log:
        log.write(json.dumps([tool] + args) + "\n")
    if os.environ.get("LC_ALL") != "C.UTF-8":
        refuse("LC_ALL is not C.UTF-8")
    with open(state_path) as f:
        lvs = json.load(f)

    def find(vid):
        vg, _, name = vid.partition("/")
        return next((lv for lv in lvs if lv["vg"] == vg and lv["name"] == name), None)

    def save():
        with open(state_path + ".new", "w") as f:
            json.dump(lvs, f)
        os.rename(state_path + ".new", state_path)

    if os.environ.get("FAKE_LVM_FAIL") == tool:
        fail("Insufficient free space: thin pool qubes_dom0/vm-pool is 100% full.")

    if tool == "lvs":
        if args != LVS_ARGS:
            refuse("lvs options")
        for lv in lvs:
            print("  %s;%s;%s;%dB;%s;%s;%s;%s;%s" % (
                lv["vg"], lv["pool"], lv["name"], lv["size"], lv["data"], lv["attr"],
                lv["origin"], "%dB" % lv["meta_size"] if lv["meta_size"] else "",
                lv["meta_pct"]))
    elif tool == "lvcreate" and args[:1] == ["--thin"]:
        if len(args) != 7 or args[1:3] != ["--setactivationskip=n", "--activate=y"] \
                or not args[3].startswith("--name=") or not args[4].startswith("--virtualsize=") \
                or not args[4].endswith("B") or args[5] != "--":
            refuse("lvcreate --thin")
        pool = find(args[6])
        if pool is None or not pool["attr"].startswith("t"):
            fail("Thin pool %s not found." % args[6])
        name = args[3][len("--name="):]
        if find(pool["vg"] + "/" + name):
            fail("Logical Volume \"%s\" already exists in volume group \"%s\"" % (name, pool["vg"]))
        lvs.append({"vg": pool["vg"], "pool": pool["name"], "name": name,
                    "size": int(args[4][len("--virtualsize="):-1]), "data": "0.00",
                    "attr": "Vwi-a-tz--", "origin": "", "meta_size": 0, "meta_pct": ""})
        save()
        print("  Logical volume \"%s\" created." % name)
    elif tool == "lvcreate" and "--snapshot" in args:
        if len(args) != 7 or args[:5] != ["--setactivationskip=n", "--activate=y", "--snapshot",
                                          "--type=thin", args[4]] or args[3] != "--type=thin" \
                or not args[4].startswith("--name=") or args[5] != "--":
            refuse("lvcreate --snapshot")
        origin = find(args[6])
        if origin is None:
            fail("Failed to find logical volume \"%s\"" % args[6])
        vid = args[4][len("--name="):]
        vg, _, name = vid.rpartition("/")
        if vg not in ("", origin["vg"]):
            refuse("snapshot into another volume group")
        if find(origin["vg"] + "/" + name):
            fail("Logical Volume \"%s\" already exists in volume group \"%s\"" % (name, origin["vg"]))
        lvs.append(dict(origin, name=name, origin=origin["name"], attr="Vwi-a-tz--"))
        save()
        print("  Logical volume \"%s\" created." % name)
    elif tool == "lvrename":
        if len(args) != 3 or args[0] != "--":
            refuse("lvrename")
        lv = find(args[1])
        if lv is None:
            fail("Existing logical volume \"%s\" not found in volume group" % args[1])
        vg, _, name = args[2].partition("/")
        if vg != lv["vg"]:
            refuse("lvrename across volume groups")
        lv["name"] = name
        save()
        print("  Renamed \"%s\" to \"%s\" in volume group \"%s\"" % (args[1], name, vg))
    elif tool == "lvchange":
        if len(args) != 3 or args[:2] != ["--activate=y", "--"]:
            refuse("lvchange")
        if find(args[2]) is None:
            fail("Failed to find logical volume \"%s\"" % args[2])
    elif tool == "lvremove":
        if len(args) != 3 or args[:2] != ["--force", "--"] or "/" not in args[2]:
            refuse("lvremove")
        lv = find(args[2])
        if lv is None:
            fail("Failed to find logical volume \"%s\"" % args[2])
        lvs.remove(lv)
        save()
        print("  Logical volume \"%s\" successfully removed." % lv["name"])
    else:
        refuse("tool")


main()

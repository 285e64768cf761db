#!/usr/bin/python3
"""Capture the golden-reply corpus (tests/golden/*.golden) from a REFERENCE qubesd.

Run ONLY by hand, against the oracle (never from CI or from the tests):

    export QREF_MIRRORS=/work/.mirror QREF=/work/oracle-run/qref
    O=/work/shared/oracle
    tools/capture-golden.py --oracle $O --qdir /work/oracle-run/golden-ref \
        --fixture tests/fixtures/golden-10/qubes.xml --out tests/golden [--only SUBSTR]
    $O/qubesd-down.sh /work/oracle-run/golden-ref --rm

For every sequence the reference is restarted from the pristine fixture (the fixture is copied
to QDIR/qubes.xml and qubesd-up.sh runs with KEEP_XML=1), an admin.Events subscriber (dest dom0)
is connected, then the requests are sent one by one on the reference socket; after each reply
the script waits a short settle delay and assigns every event received meanwhile to that
request.  The file format is described in tests/golden/README.md.

The fixture must have been captured with its pool dirs pointing at QDIR/varlib (see
tests/fixtures/golden-10/README.md); QDIR must therefore be the same directory.
"""
import argparse
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time

# --------------------------------------------------------------------------------------------
# escaping (must match tests/support/mod.rs)


def esc(b: bytes) -> str:
    out = []
    for c in b:
        if c == 0:
            out.append("\\0")
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c <= 0x7E:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# requests


class Req:
    """One request: method+arg, src, dest (or keyword), payload; or raw stdin bytes."""

    def __init__(self, method, dest="dom0", payload=b"", src="dom0", keyword=None, raw=None,
                 comment=None, deviation=None, expect_prefix=None):
        self.method = method.encode() if isinstance(method, str) else method
        self.dest = dest.encode() if isinstance(dest, str) else dest
        self.payload = payload.encode() if isinstance(payload, str) else payload
        self.src = src.encode() if isinstance(src, str) else src
        self.keyword = keyword
        self.raw = raw
        self.comment = comment
        self.deviation = deviation
        self.expect_prefix = expect_prefix

    def header(self):
        m = self.method if b"+" in self.method else self.method + b"+"
        if self.keyword is not None:
            tgt = b"keyword " + self.keyword.encode()
        else:
            tgt = b"name " + self.dest
        return m + b" " + self.src + b" " + tgt

    def wire(self):
        if self.raw is not None:
            return self.raw
        return self.header() + b"\0" + self.payload

    def write_methods(self):
        return any(w in self.method for w in (b".Set", b".Reset", b".Remove", b".Create"))


R = Req


def call_sock(sock_path, data, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not d:
            break
        chunks.append(d)
    s.close()
    return b"".join(chunks)


class Events(threading.Thread):
    """admin.Events subscriber: puts each raw event frame (bytes) on a queue."""

    def __init__(self, sock_path):
        super().__init__(daemon=True)
        self.q = queue.Queue()
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(sock_path)
        self.s.sendall(b"admin.Events+ dom0 name dom0\0")
        self.s.shutdown(socket.SHUT_WR)
        self.ready = threading.Event()

    def run(self):
        buf = b""
        while True:
            try:
                d = self.s.recv(65536)
            except OSError:
                return
            if not d:
                return
            buf += d
            while True:
                frame, buf = split_frame(buf)
                if frame is None:
                    break
                if frame == b"1\0\0connection-established\0\0":
                    self.ready.set()
                    continue
                self.q.put(frame)

    def drain(self):
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out

    def close(self):
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.s.close()


def split_frame(buf):
    """One complete `1\\0subj\\0event\\0(k\\0v\\0)*\\0` frame off the front of buf."""
    if len(buf) < 2:
        return None, buf
    if buf[:2] != b"1\0":
        raise ValueError("bad event header %r" % buf[:32])
    pos, fields = 2, 0
    while True:
        i = buf.find(b"\0", pos)
        if i < 0:
            return None, buf
        field = buf[pos:i]
        pos = i + 1
        if fields >= 2 and fields % 2 == 0 and field == b"":
            return buf[:pos], buf[pos:]
        fields += 1


# --------------------------------------------------------------------------------------------
# the corpus

VMS = ["dom0", "fedora-41", "sys-net", "sys-firewall", "default-dvm", "vm0001", "vm0002",
       "vm0003", "sa1", "disp1"]


def prop_names(sock, dest, global_=False):
    m = b"admin.property.List+ dom0 name dom0\0" if global_ else \
        b"admin.vm.property.List+ dom0 name " + dest.encode() + b"\0"
    r = call_sock(sock, m)
    assert r.startswith(b"0\0"), r
    return [n for n in r[2:].decode().split("\n") if n]


def seq_generic():
    u = "uuid:9b810e76-6ec9-4286-a3ca-828dd5f4b3b2"  # vm0001
    L = [
        R("admin.vmclass.List"),
        R("admin.vmclass.List", keyword="adminvm"),
        R("admin.vmclass.List", "vm0001"),
        R("admin.vmclass.List", payload="x"),
        R("admin.vmclass.List+AppVM"),
        R("admin.vm.List"),
        R("admin.vm.List", keyword="adminvm"),
        R("admin.vm.List", "vm0001"),
        R("admin.vm.List", "fedora-41"),
        R("admin.vm.List", "sa1"),
        R("admin.vm.List", "disp1"),
        R("admin.vm.List", u),
        R("admin.vm.List", u.upper().replace("UUID:", "uuid:")),
        R("admin.vm.List", "uuid:9b810e76-6ec9-4286-a3ca-828dd5f4b3bX"),
        R("admin.vm.List", "uuid:9B810E76-6ec9-4286-a3ca-828dd5f4b3b2"),
        R("admin.vm.List", "uuid:9b810e76-6ec9-4286-a3ca-828dd5f4b3b"),
        R("admin.vm.List", "uuid:9b810e76-6ec9-4286-a3ca-828dd5f4b3b22"),
        R("admin.vm.List", "uuid:00000000-0000-0000-0000-000000000000"),
        R("admin.vm.List", "uuid:11111111-1111-1111-1111-111111111111"),
        R("admin.vm.List", "uuid:"),
        R("admin.vm.List", "uuid:9b810e766ec94286a3ca828dd5f4b3b2"),
        R("admin.vm.List", "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2"),
        R("admin.vm.List", src="vm0003"),
        R("admin.vm.List", "vm0001", src="vm0003"),
        R("admin.vm.List", src="nosuchvm"),
        R("admin.vm.List", src=u),
        R("admin.vm.List", "nosuchvm"),
        R("admin.vm.List+x"),
        R("admin.vm.List", payload="x"),
        R("admin.vm.List+x", "vm0001", payload="y"),
        R("admin.vm.List", ".x"),
        R("admin.vm.List", "-x"),
        R("admin.vm.List", "0abc"),
        R("admin.vm.List", "a" * 31),
        R("admin.vm.List", "a" * 32),
        R("admin.vm.List", "Domain-0"),
        R("admin.vm.List", "none"),
        R("admin.vm.List", "default"),
        R("admin.vm.List", "foo-dm"),
        R("admin.vm.List", "a/b"),
        R("admin.vm.List", "a b"),
        R("admin.vm.List", ""),
        R("admin.vm.List", src=".x"),
        R("admin.vm.List", src="a" * 32),
        R("admin.vm.List", "nosuchvm", src="nosuchsrc"),
        R("admin.no.such.Method"),
        R("admin.no.such.Method", "nosuchvm"),
        R("admin.vm.list"),
        R("admin.vm.property.Get"),
        R("admin.vm.property.Get", "vm0001"),
        R("admin.vm.property.Get+label", "vm0001", payload="x"),
        R("admin.vm.property.GetAll+x", "vm0001"),
        R("admin.property.Get+clockvm", "vm0001"),
        R("admin.property.GetAll", "vm0001"),
        R("admin.property.Get+clockvm", "vm0001", payload="p"),
        R("admin.label.List", "vm0001"),
        R("admin.vm.notes.Get", "dom0"),
        R("admin.vm.notes.Get+x", "dom0"),
        R("admin.vm.CurrentState+x", "vm0001"),
        R("admin.vm.CurrentState", "vm0001", payload="x"),
        R("admin.property.HelpRst+clockvm",
          deviation="HelpRst is not served by the reference (no such method); we implement it",
          expect_prefix=b"0\0"),
        R("admin.vm.property.HelpRst+label", "vm0001",
          deviation="HelpRst is not served by the reference (no such method); we implement it",
          expect_prefix=b"0\0"),
        R("admin.vm.feature.Get+x", "vm0001", src="vm0003"),
        R("admin.vm.property.Get+name", "vm0001", src="vm0003"),
    ]
    return L


def seq_noreply():
    """Requests the reference drops without a reply (we must send an exception frame)."""
    return [
        R(b"admin.vm.List", b"vm\xc3\xa9"),
        R(b"admin.vm.List", src=b"vm\xc3\xa9"),
        R(b"admin.vm.property.Get+lab\xc3\xa9l", "vm0001"),
        R(b"admin.vm.Li\xc3\xa9st"),
        R("admin.vm.List", keyword="dispvm"),
        R("admin.vm.List", keyword="default"),
        R("x", raw=b"admin.vm.List+ dom0 name dom0"),
        R("x", raw=b"admin.vm.List+ dom0\0"),
        R("x", raw=b"admin.vm.List+ dom0 name\0"),
        R("x", raw=b"admin.vm.List+ dom0 other dom0\0"),
        R("x", raw=b"\0"),
        R("x", raw=b""),
        R("x", raw=b"admin.vm.List+ dom0 name dom0\0" + b"x" * 65536),
    ]


def seq_current_state():
    dev = ("dom0's CurrentState comes from the hypervisor: the reference's libvirt node XML has a "
           "Domain-0 (2 GiB) and cputime is the test driver's wall clock (never reproducible)")
    L = [R("admin.vm.CurrentState", v) for v in VMS[1:] + ["vm0009", "default-dvm"]]
    L.append(R("admin.vm.CurrentState", "nosuchvm"))
    L.append(R("admin.vm.CurrentState", "dom0", deviation=dev, expect_prefix=b"0\0mem="))
    L.append(R("admin.vm.CurrentState", keyword="adminvm", deviation=dev,
               expect_prefix=b"0\0mem="))
    return L


def seq_labels():
    names = ["red", "orange", "yellow", "green", "gray", "blue", "purple", "black", "cyan"]
    L = [R("admin.label.List"), R("admin.label.List+red")]
    for n in names:
        L += [R("admin.label.Get+" + n), R("admin.label.Index+" + n)]
    for a in ["1", "3", "8", "9", "10", "0", "-1", "label-3", "nosuch", "Red", "red ", "_x"]:
        L += [R("admin.label.Get+" + a), R("admin.label.Index+" + a)]
    L += [
        R("admin.label.Get"),
        R("admin.label.Get+red", "vm0001"),
        R("admin.label.Create+magenta", payload="0xff00ff"),
        R("admin.label.List"),
        R("admin.label.Get+magenta", deviation=QUIRK, expect_prefix=b"0\x000xff00ff"),
        R("admin.label.Index+magenta"),
        R("admin.label.Create+magenta", payload="0xff00ff"),
        R("admin.label.Create+red", payload="0xff0000"),
        R("admin.label.Create+lime"),
        R("admin.label.Create+lime", payload="ff00ff"),
        R("admin.label.Create+lime", payload="0xff00f"),
        R("admin.label.Create+lime", payload="0xff00fff"),
        R("admin.label.Create+lime", payload="0xgg00ff"),
        R("admin.label.Create+lime", payload="0XFF00FF"),
        R("admin.label.Create+lime", payload="0xFF00FF"),
        R("admin.label.Create+lime", payload=b"0xff\xc3\xa9"),
        R("admin.label.Create+1abc", payload="0x123456"),
        R("admin.label.Create+a.b", payload="0x123456"),
        R("admin.label.Create+a-b", payload="0x123456"),
        R("admin.label.Create+" + "l" * 33, payload="0x123456"),
        R("admin.label.Create+label-12", payload="0x123456"),
        R("admin.label.Create+navy", "vm0001", payload="0x000080"),
        R("admin.label.List"),
        R("admin.label.Index+lime"),
        R("admin.label.Remove+red"),
        R("admin.label.Remove+1"),
        R("admin.label.Remove+nosuch"),
        R("admin.label.Remove+magenta", payload="x"),
        R("admin.label.Remove+magenta"),
        R("admin.label.Get+magenta"),
        R("admin.label.List"),
        R("admin.vm.property.Set+label", "vm0004", payload="cyan"),
        R("admin.label.Remove+cyan"),
        R("admin.vm.property.Set+label", "vm0004", payload="blue"),
        R("admin.label.Remove+cyan"),
        R("admin.label.List"),
        R("admin.label.Create+magenta", payload="0x00ff00"),
        R("admin.label.Index+magenta"),
        R("admin.label.Get+magenta", deviation=QUIRK, expect_prefix=b"0\x000x00ff00"),
    ]
    return L


QUIRK = ("reference quirk (core.md 3.6): label.Create keeps the raw payload bytes, so a Get of "
         "that label in the same qubesd session gets no reply; we return the colour")


def seq_label_quirk():
    return [
        R("admin.label.Create+teal", payload=" 0x008080\n",
          comment="reference stores the raw payload; the later Get gets no reply in the same session"),
        R("admin.label.Index+teal"),
        R("admin.label.Get+teal", deviation=QUIRK, expect_prefix=b"0\0"),
    ]


def seq_global_read(sock):
    names = prop_names(sock, "dom0", global_=True)
    L = [R("admin.property.List"), R("admin.property.GetAll"),
         R("admin.property.List", keyword="adminvm"), R("admin.property.GetAll", keyword="adminvm")]
    for n in names:
        L += [R("admin.property.Get+" + n), R("admin.property.GetDefault+" + n),
              R("admin.property.Help+" + n)]
    L += [R("admin.property.Get+nosuch"), R("admin.property.GetDefault+nosuch"),
          R("admin.property.Help+nosuch"), R("admin.property.Get+Clockvm"),
          R("admin.property.Get+clockvm", src="vm0003"),
          R("admin.property.Get"), R("admin.property.GetDefault"), R("admin.property.Help")]
    return L


def seq_global_write(sock):
    names = prop_names(sock, "dom0", global_=True)
    S = lambda p, v: R("admin.property.Set+" + p, payload=v)
    G = lambda p: R("admin.property.Get+" + p)
    L = []
    for v in [" 5\n", "+3", "1_000", "007", "-2", "0", "x", "", "5.0", "1__0", "１"]:
        L += [S("stats_interval", v), G("stats_interval")]
    for v in ["True", "false", "yes", "No", "on", "OFF", "1", "0", "truE", "2", " true", ""]:
        L += [S("check_updates_vm", v), G("check_updates_vm")]
    for v in ["sys-net", "", "nosuch", ".bad", "vm0001", "sys-firewall", b"sys-n\xc3\xa9t"]:
        L += [S("default_netvm", v), G("default_netvm")]
    for v in ["fedora-41", "vm0001", "nosuch", "", "sa1", "fedora-41"]:
        L += [S("default_template", v), G("default_template")]
    for v in ["default-dvm", "vm0001", "sa1", "", "default-dvm"]:
        L += [S("default_dispvm", v), G("default_dispvm")]
    for v in ["default-dvm", "vm0002", ""]:
        L += [S("management_dispvm", v), G("management_dispvm")]
    for v in ["sys-net", "vm0002", "dom0", ""]:
        L += [S("clockvm", v), G("clockvm"), R("admin.vm.feature.List", "sys-net")]
    for v in ["sys-firewall", "", "dom0"]:
        L += [S("updatevm", v), G("updatevm")]
    for v in ["vm0001", "", "dom0"]:
        L += [S("default_guivm", v), G("default_guivm")]
        L += [S("default_audiovm", v), G("default_audiovm")]
    for v in ["nosuchkernel", "", b"\xc3\xa9"]:
        L += [S("default_kernel", v), G("default_kernel")]
    for v in ["nosuchpool", "linux-kernel", "varlibqubes", "", "a\tb"]:
        L += [S("default_pool", v), G("default_pool")]
        L += [S("default_pool_private", v), G("default_pool_private")]
    for v in ["120", "abc", ""]:
        L += [S("default_qrexec_timeout", v), S("default_shutdown_timeout", v)]
    L += [S("maxmem", "1000"), S("no_cpus", "2"), S("nosuch", "1"),
          R("admin.property.Set"), R("admin.property.Set+stats_interval", "vm0001", payload="4"),
          S("stats_interval", b"\xff")]
    L += [R("admin.property.GetAll")]
    for n in names:
        if n != "default_kernel":
            L += [R("admin.property.Reset+" + n)]
    L += [R("admin.property.Reset+nosuch"), R("admin.property.Reset+stats_interval", payload="1"),
          R("admin.property.GetAll")]
    # the reference then fails to save (no reply) on every later write in the session: keep last
    L += [R("admin.property.Reset+default_kernel",
            comment="reference: no reply, and every later save in this session fails")]
    return L


def seq_vm_read(sock, vm):
    names = prop_names(sock, vm)
    P = "admin.vm.property."
    L = [R(P + "List", vm), R(P + "GetAll", vm)]
    for n in names:
        L += [R(P + "Get+" + n, vm), R(P + "GetDefault+" + n, vm), R(P + "Help+" + n, vm)]
    L += [R(P + "Get+nosuch", vm), R(P + "GetDefault+nosuch", vm), R(P + "Help+nosuch", vm),
          R(P + "Get+template", vm), R(P + "Get+Name", vm), R(P + "List+name", vm)]
    return L


INTS = [" 5\n", "+3", "1_000", "007", "-1", "0", "x", "", "2.5", "0x10", "1 000"]
BOOLS = ["True", "false", "yes", "No", "on", "OFF", "1", "0", "2", "tru", " True", ""]


def seq_vm_write(sock, vm):
    names = set(prop_names(sock, vm))
    P = "admin.vm.property."
    S = lambda p, v: R(P + "Set+" + p, vm, payload=v)
    G = lambda p: R(P + "Get+" + p, vm)
    L = []

    def ints(p, vals=INTS):
        nonlocal L
        if p in names:
            for v in vals:
                L += [S(p, v), G(p)]

    def bools(p, vals=BOOLS):
        nonlocal L
        if p in names:
            for v in vals:
                L += [S(p, v), G(p)]

    def vals(p, vs):
        nonlocal L
        if p in names:
            for v in vs:
                L += [S(p, v), G(p)]

    ints("vcpus")
    ints("memory", [" 500\n", "+600", "1_000", "0", "-5", "x"])
    ints("maxmem", ["4000", "0", "x"])
    ints("qrexec_timeout", ["+3", "0", "bad"])
    ints("shutdown_timeout", ["120", "-1"])
    ints("backup_timestamp", ["1700000000", "x", ""])
    ints("stubdom_mem", ["128", "x"])
    ints("qid", ["77"])
    ints("xid", ["5"])
    # valid autostart values: see seq_artefacts (the oracle's setter needs sudo/systemctl)
    bools("autostart", ["2", "tru", " True", "", b"\xc3\xa9"])
    bools("include_in_backups", ["False", "x"])
    bools("debug", ["yes", b"y\xc3\xa9s"])
    bools("provides_network", ["True", "False"])
    bools("template_for_dispvms", ["True", "False"])
    bools("installed_by_rpm", ["True"])
    bools("updateable", ["True"])
    bools("auto_cleanup", ["True", "x"])
    vals("label", ["green", "label-3", "3", "9", "cyan", "label-99", "nosuch", "", "Label-3",
                   b"gr\xc3\xa9en", "red"])
    vals("netvm", ["sys-firewall", "", "nosuch", ".bad", "vm0001", "fedora-41", vm,
                   "a" * 32, b"sys-n\xc3\xa9t", "sys-net"])
    vals("default_dispvm", ["default-dvm", "vm0002", "", "nosuch", "sa1"])
    vals("management_dispvm", ["default-dvm", "vm0002", ""])
    vals("template", ["fedora-41", "vm0002", "", "nosuch", "sa1", "default-dvm"])
    vals("guivm", ["vm0002", "", "dom0"])
    vals("audiovm", ["sys-net", "", "dom0"])
    vals("kernel", ["", "nosuch", b"6.\xc3\xa9", "1.0"])
    vals("kernelopts", ["a b", "line1\nline2", "back\\slash", "x" * 513, "\x01", b"\xc3\xa9", ""])
    vals("virt_mode", ["hvm", "PV", "pvh", "bogus", ""])
    vals("default_user", ["bob", "", "\t", b"b\xc3\xb6b"])
    vals("keyboard_layout", ["de++", "us", "x+y+z+w", ""])
    vals("mac", ["00:16:3e:00:00:01", "bad"])
    vals("ip", ["10.137.0.99", "10.137.0.999", "::1"])
    vals("ip6", ["fd09:24ef:4179::a89:1", "bad", "10.0.0.1"])
    vals("uuid", ["11111111-1111-1111-1111-111111111111", "bad"])
    vals("name", ["renamed"])
    vals("klass", ["AppVM"])
    vals("icon", ["x"])
    vals("dns", ["1.1.1.1"])
    vals("gateway", ["1.1.1.1"])
    vals("visible_ip", ["1.1.1.1"])
    vals("start_time", ["1"])
    vals("bootmode", ["x"])
    vals("devices_denied", ["abc"])
    vals("dispid", ["5"])
    vals("appvm_default_bootmode", ["x"])
    L += [S("nosuch", "x"), R(P + "Set", vm, payload="x")]
    L += [R(P + "GetAll", vm)]
    for p in sorted(names):
        L += [R(P + "Reset+" + p, vm)]
    L += [R(P + "Reset+nosuch", vm), R(P + "Reset+label", vm, payload="x"), R(P + "GetAll", vm)]
    return L


def seq_features():
    F = "admin.vm.feature."
    L = []
    for vm in ["dom0", "fedora-41", "vm0001", "vm0002", "sys-net", "default-dvm", "disp1", "sa1"]:
        L += [R(F + "List", vm)]
    L += [
        R(F + "Get+myfeat", "vm0001"), R(F + "Get+nosuch", "vm0001"), R(F + "Get+service.foo", "vm0002"),
        R(F + "Get+gui", "fedora-41"), R(F + "Get"), R(F + "Get+x", "vm0001", payload="p"),
        R(F + "Set+f1", "vm0001", payload="v1"),
        R(F + "Set+f1", "vm0001", payload="v2"),
        R(F + "Set+f1", "vm0001", payload="v2"),
        R(F + "Set+f2", "vm0001"),
        R(F + "Get+f2", "vm0001"),
        R(F + "List", "vm0001"),
        R(F + "Set+f3", "vm0001", payload="with space and ~!@#$%^&*()"),
        R(F + "Set+f4", "vm0001", payload="tab\there"),
        R(F + "Set+f4", "vm0001", payload="nl\nhere"),
        R(F + "Set+f4", "vm0001", payload=b"\x02\x03\xff"),
        R(F + "Set+f4", "vm0001", payload=b"\xc3\xb6"),
        R(F + "Set+f 4", "vm0001", payload="x"),
        R(F + "Set+f/4", "vm0001", payload="x"),
        R(F + "Set+f:4", "vm0001", payload="x"),
        R(F + "Set+f-4_.A", "vm0001", payload="x"),
        R(F + "Set", "vm0001", payload="x"),
        R(F + "Set+ ", "vm0001", payload="x"),
        R(F + "Set+deferred-netvm-original", "vm0001", payload="x"),
        R(F + "Set+preload-dispvm", "vm0001", payload="x"),
        R(F + "Set+preload-dispvm-completed", "vm0001", payload="x"),
        R(F + "Set+preload-dispvm-in-progress", "vm0001", payload="x"),
        R(F + "Remove+preload-dispvm", "vm0001"),
        R(F + "Remove+deferred-netvm-original", "vm0001"),
        R(F + "Set+service.", "vm0001", payload="1"),
        R(F + "Set+service.a/b", "vm0001", payload="1"),
        R(F + "Set+service..", "vm0001", payload="1"),
        R(F + "Set+service...", "vm0001", payload="1"),
        R(F + "Set+service." + "s" * 48, "vm0001", payload="1"),
        R(F + "Set+service." + "s" * 49, "vm0001", payload="1"),
        R(F + "Set+service.app-dispvm." + "s" * 60, "vm0001", payload="1"),
        R(F + "Set+service.ok", "vm0001", payload="1"),
        R(F + "Set+vm-config.", "vm0001", payload="x"),
        R(F + "Set+vm-config.1abc", "vm0001", payload="x"),
        R(F + "Set+vm-config." + "c" * 52, "vm0001", payload="x"),
        R(F + "Set+vm-config." + "c" * 53, "vm0001", payload="x"),
        R(F + "Set+vm-config.ok", "vm0001", payload="x"),
        R(F + "Set+custom-persist.", "vm0001", payload="/x"),
        R(F + "Set+custom-persist." + "k" * 54, "vm0001", payload="/x"),
        R(F + "Set+custom-persist." + "k" * 55, "vm0001", payload="/x"),
        R(F + "Set+custom-persist.a", "vm0001", payload="/home/user/x"),
        R(F + "Set+custom-persist.b", "vm0001", payload="relative"),
        R(F + "Set+custom-persist.c", "vm0001", payload="file:user:user:0644:/home/user/x"),
        R(F + "Set+custom-persist.d", "vm0001", payload="dir:root:root:0755:/a:b"),
        R(F + "Set+custom-persist.e", "vm0001", payload="link:root:root:0755:/a"),
        R(F + "Set+custom-persist.f", "vm0001", payload="file:root:root:9999:/a"),
        R(F + "Set+custom-persist.g", "vm0001", payload="file:root:root:0755:rel"),
        R(F + "Set+custom-persist.h", "vm0001", payload="file:root:0755:/a"),
        R(F + "Set+custom-persist.i", "vm0001", payload=""),
        R(F + "List", "vm0001"),
        R(F + "Remove+f1", "vm0001"),
        R(F + "Remove+f1", "vm0001"),
        R(F + "Remove+nosuch", "vm0001"),
        R(F + "Remove", "vm0001"),
        R(F + "Remove+f2", "vm0001", payload="x"),
        R(F + "Set+f1", "vm0001", payload="again"),
        R(F + "List", "vm0001"),
        R(F + "Set+tplfeat", "fedora-41", payload="fromtpl"),
        R(F + "Set+tplempty", "fedora-41", payload=""),
        R(F + "Set+adminfeat", "dom0", payload="fromdom0"),
        R(F + "Set+netfeat", "sys-net", payload="fromnet"),
        R(F + "Set+fwfeat", "sys-firewall", payload="fromfw"),
    ]
    C = ["CheckWithTemplate", "CheckWithNetvm", "CheckWithAdminVM", "CheckWithTemplateAndAdminVM"]
    for vm in ["vm0001", "vm0003", "disp1", "default-dvm", "fedora-41", "dom0", "sa1"]:
        for c in C:
            for f in ["tplfeat", "tplempty", "adminfeat", "netfeat", "fwfeat", "myfeat", "nosuch"]:
                L.append(R(F + c + "+" + f, vm))
    L += [R(F + "CheckWithTemplate", "vm0001"), R(F + "CheckWithNetvm+x", "vm0001", payload="y")]
    L += [R(F + "Set+x", "vm0001", payload="v", src="vm0003"),
          R(F + "Remove+x", "vm0001", src="vm0003"),
          R(F + "Set+preload-dispvm-max", "default-dvm", payload="1"),
          R(F + "Set+preload-dispvm-max", "vm0001", payload="x"),
          R(F + "Set+preload-dispvm-delay", "default-dvm", payload="x"),
          R(F + "Set+preload-dispvm-threshold", "dom0", payload="x"),
          R(F + "Set+preload-dispvm-threshold", "dom0", payload="5")]
    return L


def seq_tags():
    T = "admin.vm.tag."
    L = []
    for vm in ["dom0", "fedora-41", "vm0001", "sys-net", "sa1", "disp1"]:
        L += [R(T + "List", vm)]
    L += [
        R(T + "Get+mytag", "vm0001"), R(T + "Get+nosuch", "vm0001"), R(T + "Get+guivm-dom0", "vm0001"),
        R(T + "Get+bad.tag", "vm0001"), R(T + "Get+bad tag", "vm0001"), R(T + "Get", "vm0001"),
        R(T + "Set+t1", "vm0001"), R(T + "Set+t1", "vm0001"), R(T + "Set+T-2_x", "vm0001"),
        R(T + "List", "vm0001"),
        R(T + "Set+.some-tag", "vm0001"), R(T + "Set+a:b", "vm0001"), R(T + "Set+a/b", "vm0001"),
        R(T + "Set+a+b", "vm0001"), R(T + "Set+", "vm0001"), R(T + "Set+t", "vm0001", payload="x"),
        R(T + "Set+created-by-dom0", "vm0001"),
        R(T + "Set+created-by-vm0001", "vm0002", src="vm0003"),
        R(T + "Set+created-by-x", "vm0002", src="vm0003"),
        R(T + "Remove+created-by-dom0", "vm0001", src="vm0003"),
        R(T + "Set+t9", "vm0002", src="vm0003"),
        R(T + "Remove+t9", "vm0002", src="vm0003"),
        R(T + "Remove+t1", "vm0001"), R(T + "Remove+t1", "vm0001"),
        R(T + "Remove+bad.tag", "vm0001"), R(T + "Remove", "vm0001"),
        R(T + "Remove+created-by-dom0", "vm0001"),
        R(T + "Set+dom0tag", "dom0"), R(T + "List", "dom0"),
        R(T + "Remove+guivm-dom0", "vm0001"), R(T + "List", "vm0001"),
        R(T + "List+mytag", "vm0001"),
        R(T + "Set+created-by-sys-net", "vm0005"),
        R(T + "List", "vm0005"),
        R(T + "Set+created-by-nosuchvm", "vm0006",
          comment="reference: tag-add handler fails (no reply); tag stays in memory unsaved"),
    ]
    return L


def seq_notes():
    N = "admin.vm.notes."
    L = [R(N + "Get", v) for v in ["vm0001", "fedora-41", "sa1", "disp1", "sys-net"]]
    L += [R(N + "Get", "dom0"), R(N + "Get", "nosuch"), R(N + "Get+x", "vm0001"),
          R(N + "Get", "vm0001", payload="x"), R(N + "Set", "dom0", payload="x"),
          R(N + "Set", "vm0001"), R(N + "Set+x", "vm0001", payload="x")]
    dev = ("notes.Set fails in the oracle only (libqubes-pure.so.0 missing, oracle artefact); "
           "a real dom0 stores the notes and so do we")
    L += [R(N + "Set", "vm0001", payload="hello notes\nline 2", deviation=dev, expect_prefix=b"0\0"),
          R(N + "Get", "vm0001", deviation="depends on the previous notes.Set (oracle artefact)",
            expect_prefix=b"0\0")]
    return L


def seq_artefacts():
    dev = ("oracle artefact: the reference's autostart setter runs sudo systemctl, missing in the "
           "oracle (no reply); a real dom0 succeeds")
    return [R("admin.vm.property.Set+autostart", "vm0001", payload="True", deviation=dev,
              expect_prefix=b"0\0")]


# The project's dispatch table takes an optional argument on these List calls (the Admin API
# document's rule: a List given an object identifier returns just that entry); the reference
# refuses any argument ("unexpected argument").
OPTIONAL_ARG_LISTS = [b"admin.vmclass.List", b"admin.label.List", b"admin.property.List",
                      b"admin.vm.property.List", b"admin.vm.feature.List", b"admin.vm.tag.List"]


def mark_deviations(reqs):
    for r in reqs:
        m, _, arg = r.method.partition(b"+")
        if r.deviation is None and m in OPTIONAL_ARG_LISTS and arg and not r.payload:
            r.deviation = ("List with an argument: the reference refuses it (unexpected argument); "
                           "we return just that entry (Admin API document rule)")
            r.expect_prefix = b"0\0"
        elif r.deviation is None and m == b"admin.vm.List" and r.src != b"dom0":
            r.deviation = ("non-dom0 callers of admin.vm.List are filtered through qrexec policy, "
                           "which lands with the policy issue; until then they see only what "
                           "needs no policy (nothing for dest dom0)")
            r.expect_prefix = b"0\0"
        elif r.deviation is None and r.method == b"admin.property.Reset+default_kernel":
            r.deviation = ("the reference crashes in a post-reset handler (no reply) although a "
                           "store without default_kernel is legitimate (a fresh one has none); "
                           "we reset it")
            r.expect_prefix = b"0\0"
    # After a vm-config./custom-persist. Set that failed its post-set check, the reference keeps
    # the value in memory (and saves it later); a failed call of ours changes nothing.
    tainted = False
    for r in reqs:
        m, _, arg = r.method.partition(b"+")
        if m == b"admin.vm.feature.Set" and (arg.startswith(b"vm-config.")
                                             or arg.startswith(b"custom-persist.")):
            tainted = True
        elif tainted and r.deviation is None and m == b"admin.vm.feature.List":
            r.deviation = ("a failed call changes nothing: the reference keeps vm-config./"
                           "custom-persist. values whose post-set check failed in memory (and "
                           "saves them later); we never store them")
            r.expect_prefix = b"0\0"
    return reqs


def corpus(sock):
    seqs = [
        ("generic", seq_generic()),
        ("no-reply", seq_noreply()),
        ("current-state", seq_current_state()),
        ("labels", seq_labels()),
        ("labels-quirk", seq_label_quirk()),
        ("global-read", seq_global_read(sock)),
        ("global-write", seq_global_write(sock)),
        ("features", seq_features()),
        ("tags", seq_tags()),
        ("notes", seq_notes()),
        ("oracle-artefacts", seq_artefacts()),
    ]
    for vm in VMS:
        seqs.append(("vm-read-" + vm, seq_vm_read(sock, vm)))
    for vm in ["dom0", "fedora-41", "sys-net", "sys-firewall", "default-dvm", "vm0001", "vm0002",
               "sa1", "disp1"]:
        seqs.append(("vm-write-" + vm, seq_vm_write(sock, vm)))
    return [(n, mark_deviations(r)) for n, r in seqs]


# --------------------------------------------------------------------------------------------


def restart(args):
    qdir = args.qdir
    subprocess.run([os.path.join(args.oracle, "qubesd-down.sh"), qdir], check=True)
    shutil.copyfile(args.fixture, os.path.join(qdir, "qubes.xml"))
    env = dict(os.environ, KEEP_XML="1")
    out = subprocess.run([os.path.join(args.oracle, "qubesd-up.sh"), str(args.n), qdir],
                         env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return out.stdout.decode().strip().splitlines()[-1]


def capture(args, name, reqs, sock):
    ev = Events(sock)
    ev.start()
    if not ev.ready.wait(10):
        raise SystemExit("no connection-established from admin.Events")
    lines = ["# golden sequence '%s': %d requests, captured from the reference qubesd "
             "(qubes-core-admin 4.4.0) on tests/fixtures/golden-10/qubes.xml" % (name, len(reqs)),
             "# format: tests/golden/README.md", ""]
    empty_mid = []
    for i, r in enumerate(reqs):
        reply = call_sock(sock, r.wire())
        time.sleep(args.settle_write if r.write_methods() else args.settle_read)
        events = ev.drain()
        if not reply and i != len(reqs) - 1 and r.raw is None:
            empty_mid.append(i)
        if r.comment:
            lines.append("# " + r.comment)
        if r.deviation:
            lines.append("# deviation: " + r.deviation)
        if r.raw is not None:
            lines.append(">raw " + esc(r.raw))
        else:
            lines.append("> " + esc(r.header()))
            if r.payload:
                lines.append("| " + esc(r.payload))
        lines.append(("< " + esc(reply)) if reply else "<")
        if r.expect_prefix is not None:
            lines.append("<~ " + esc(r.expect_prefix))
        for e in events:
            lines.append("! " + esc(e))
        lines.append("")
    ev.close()
    with open(os.path.join(args.out, name + ".golden"), "w", encoding="ascii") as f:
        f.write("\n".join(lines))
    return empty_mid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--qdir", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--only", default=None)
    ap.add_argument("--settle-read", type=float, default=0.02)
    ap.add_argument("--settle-write", type=float, default=0.15)
    args = ap.parse_args()
    args.qdir = os.path.abspath(args.qdir)
    os.makedirs(args.out, exist_ok=True)
    sock = restart(args)
    seqs = corpus(sock)
    total = 0
    for name, reqs in seqs:
        if args.only and args.only not in name:
            continue
        sock = restart(args)
        mid = capture(args, name, reqs, sock)
        total += len(reqs)
        print("%-24s %4d requests%s" % (name, len(reqs),
              ("  EMPTY REPLY mid-sequence at %s" % mid) if mid else ""), file=sys.stderr)
    subprocess.run([os.path.join(args.oracle, "qubesd-down.sh"), args.qdir], check=True)
    shutil.copyfile(args.fixture, os.path.join(args.qdir, "qubes.xml"))
    print("total %d requests" % total, file=sys.stderr)


if __name__ == "__main__":
    main()

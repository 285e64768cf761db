#!/bin/bash
# Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (not tracked; rerun
# after the dispatch table or the golden files change) and the dispatch dictionary
# fuzz/corpus/dispatch.dict, from:
#   * tests/golden/*.golden: request sequences captured from the reference qubesd (dispatch:
#     up to 8 consecutive requests per seed, so writes are followed by the reads that see them;
#     framing: the raw socket buffers, names, event frames, log records);
#   * tests/fixtures/*/qubes.xml and smaller documents cut from golden-10 (xml_codec, each with
#     a few mutations in the 4-byte header);
#   * docs/methods.md: the dispatch table's row order (the dispatch target's method selector).
# Input formats: the doc comment at the top of each fuzz/fuzz_targets/*.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import hashlib, os, re, sys, glob

OUT = "fuzz/corpus"
REC, FIELD = b"\x1e", b"\x1f"

def unescape(s):
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "0": out.append(0); i += 2; continue
            if n == "n": out.append(10); i += 2; continue
            if n == "\\": out.append(92); i += 2; continue
            if n == "x": out.append(int(s[i + 2:i + 4], 16)); i += 4; continue
        out += c.encode()
        i += 1
    return bytes(out)

def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# The table's row order, as docs/methods.md lists it (a unit test keeps it current).
methods = re.findall(r"^\| `([^`]+)` \|", open("docs/methods.md").read(), re.M)
index = {m: i for i, m in enumerate(methods)}
CUSTOM = len(methods)

# --- golden files: request sequences ---------------------------------------------------------
sequences = []  # list of lists of (kind, header-or-raw bytes, payload bytes, events)
for path in sorted(glob.glob("tests/golden/*.golden")):
    seq, cur = [], None
    for line in open(path, encoding="ascii").read().splitlines():
        if line.startswith("> "):
            cur = ["req", unescape(line[2:]), b"", []]; seq.append(cur)
        elif line.startswith(">raw "):
            cur = ["raw", unescape(line[5:]), b"", []]; seq.append(cur)
        elif line.startswith("| ") and cur is not None:
            cur[2] = unescape(line[2:])
        elif line.startswith("! ") and cur is not None:
            cur[3].append(unescape(line[2:]))
    sequences.append(seq)

def record(req, mode):
    kind, hdr, payload, _ = req
    if kind == "req":
        parts = hdr.split(b" ")
        if len(parts) == 4 and mode != 3:
            service, src, ttype, dest = parts
            method, _, arg = service.partition(b"+")
            m = method.decode("latin-1")
            if m in index:
                head = bytes([index[m], mode])
            else:
                head = bytes([CUSTOM, mode]) + method + FIELD
            return head + FIELD.join([arg, src, ttype, dest, payload])
        raw = hdr + b"\0" + payload
    else:
        raw = hdr
    return bytes([0, 3]) + raw

tokens = set()
n = 0
for seq in sequences:
    for start in range(0, len(seq), 8):
        chunk = seq[start:start + 8]
        recs = [record(r, (n + i) % 4 if (n + i) % 4 != 3 else 1) for i, r in enumerate(chunk)]
        data = REC.join(r for r in recs)
        if len(data) <= 8192 and all(REC not in r[2:] for r in recs):
            write("dispatch", data)
        n += 1
        for r in chunk:
            if r[0] == "req":
                for p in r[1].split(b" "):
                    tokens.update(p.split(b"+"))
    # every raw (framing) request on its own, as the raw socket buffer
    for r in seq:
        if r[0] == "raw" and len(r[1]) <= 8192 and REC not in r[1]:
            write("dispatch", bytes([0, 3]) + r[1])

def dict_escape(b):
    return "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else "\\x%02x" % c for c in b)

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "dispatch.dict"), "w") as f:
    for t in sorted(tokens | {b"name", b"keyword", b"adminvm", b"dom0", b"uuid:", REC, FIELD}):
        if 0 < len(t) <= 64:
            f.write('"%s"\n' % dict_escape(t))

# --- framing: parsers and validators ---------------------------------------------------------
for seq in sequences:
    for kind, hdr, payload, events in seq:
        raw = hdr + b"\0" + payload if kind == "req" else hdr
        if len(raw) <= 8192:
            write("framing", b"\x00" + raw)
        if kind == "req":
            parts = hdr.split(b" ", 3)
            if len(parts) == 4:
                write("framing", b"\x01" + FIELD.join([parts[0], parts[1], parts[2], parts[3], payload]))
                write("framing", b"\x02" + parts[3])
                write("framing", b"\x03" + parts[0].partition(b"+")[2])
            if b"label.Create" in hdr:
                write("framing", b"\x04" + payload)
            if b"notes.Set" in hdr:
                write("framing", b"\x05" + payload)
        for i, ev in enumerate(events):
            write("framing", b"\x06" + ev)
            write("framing", b"\x07" + b"#%d %d\n" % (i + 1, len(ev)) + ev + b"\n")
for s in [b"uuid:00000000-0000-0000-0000-000000000000", b"uuid:6a6c1d46-4b2c-4f5e-9d3a-0123456789AB",
          b"0x73d216", b" 0xCC0000\n", "notes \u00e9 \u202e\t\n".encode(), b"\xd8"]:
    for sel in (2, 4, 5):
        write("framing", bytes([sel]) + s)

# --- xml_codec: documents with mutations ------------------------------------------------------
docs = [open(p, "rb").read() for p in sorted(glob.glob("tests/fixtures/*/qubes.xml"))
        if os.path.getsize(p) <= 65536]
g10 = open("tests/fixtures/golden-10/qubes.xml", "rb").read()
m = re.search(rb"(?s)^(.*?<domains>)(.*)(\n  </domains>.*)$", g10)
head, body, tail = m.group(1), m.group(2), m.group(3)
doms = re.findall(rb"(?s)\n    <domain .*?</domain>", body)
for k in (0, 1, 2, 3):
    docs.append(head + b"".join(doms[:k]) + tail)
docs.append(head + doms[1] + b"\n    <!-- a comment -->" + doms[0] + tail)  # slow path
docs += [b"<qubes/>", b"<?xml version='1.0' encoding='utf-8'?>\n<qubes version=\"3.0\">\n  <domains/>\n</qubes>\n",
         b"<qubes><domains><domain class=\"AppVM\"><properties><property name=\"name\">a&amp;b</property>"
         b"<property name=\"qid\">1</property></properties><features><feature name=\"f\"><![CDATA[x<y]]></feature>"
         b"</features><tags><tag name=\"t\"/></tags><devices class=\"pci\"/></domain></domains></qubes>"]
mutations = [(0, 1, b"label", b"red"), (0, 2, b"netvm", b""), (0, 3, b"kernelopts", b"a&b <c>\r\n"),
             (1, 1, b"netvm", b""), (2, 1, b"gui", b"1"), (2, 0, b"service.x", b"\t"),
             (3, 1, b"qrexec", b""), (4, 1, b"created-by-dom0", b""), (5, 1, b"audiovm-dom0", b""),
             (6, 0, b"default_netvm", b"sys-firewall"), (7, 0, b"clockvm", b""), (8, 0, b"", b"")]
for d in docs:
    for op, dom, k, v in mutations:
        write("xml_codec", bytes([op, dom, len(k), len(v)]) + k + v + d)
print("seeded:", {t: len(os.listdir(os.path.join(OUT, t))) for t in ("dispatch", "framing", "xml_codec")})
PY

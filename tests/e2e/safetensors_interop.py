#!/usr/bin/env python3
"""Independent check of a safetensors file written by eddy, using only the standard library
(Debian 12 packages no safetensors reader). It re-implements the layout rules from the format
description: 8-byte little-endian header length, UTF-8 JSON header padded with spaces to a
multiple of 8, tensors whose byte ranges exactly tile the data buffer. Then it compares the
file against a JSON sidecar of expectations.

usage: safetensors_interop.py FILE SIDECAR.json
sidecar: {"tensors": {"name": {"dtype": "F32", "shape": [2, 3], "values": [...]}},  values optional
          "metadata": {"key": "value"},          optional; listed keys must match exactly
          "exact": true,                         optional (default true): no other tensors allowed
          "tolerance": 0.0}                      optional absolute tolerance for float values
Floats in "values" may be NaN / Infinity / -Infinity (Python's json literals); NaN matches NaN.
Exit status: 0 file valid and matching, 1 invalid or mismatch (reason on stderr), 2 usage error.
"""
import json
import math
import struct
import sys

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "U8": 1}


class Bad(Exception):
    pass


def no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise Bad("duplicate JSON key %r" % k)
        out[k] = v
    return out


def decode(dtype, raw, numel):
    if dtype == "F32":
        return list(struct.unpack("<%df" % numel, raw))
    if dtype == "F16":
        return list(struct.unpack("<%de" % numel, raw))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % numel, raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    if dtype == "F64":
        return list(struct.unpack("<%dd" % numel, raw))
    if dtype == "I64":
        return list(struct.unpack("<%dq" % numel, raw))
    if dtype == "U8":
        return list(raw)
    raise Bad("unknown dtype %r" % dtype)


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise Bad("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise Bad("header length %d > file size %d - 8" % (n, len(data)))
    if (8 + n) % 8 != 0:
        raise Bad("header length %d: 8 + N is not a multiple of 8" % n)
    raw = data[8 : 8 + n]
    if not raw.rstrip(b" ").endswith(b"}") or not raw.startswith(b"{"):
        raise Bad("header is not a JSON object padded with spaces")
    header = json.loads(raw.decode("utf-8", errors="strict"), object_pairs_hook=no_duplicates)
    if not isinstance(header, dict):
        raise Bad("header is not an object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Bad("__metadata__ is not a string-to-string object")
    buf = data[8 + n :]
    tensors, ranges = {}, []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise Bad("tensor %r entry is not an object" % name)
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SIZES:
            raise Bad("tensor %r: bad dtype %r" % (name, dtype))
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise Bad("tensor %r: bad shape %r" % (name, shape))
        if not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int and o >= 0 for o in offs):
            raise Bad("tensor %r: bad data_offsets %r" % (name, offs))
        begin, end = offs
        numel = math.prod(shape)
        if begin > end or end > len(buf) or numel * SIZES[dtype] != end - begin:
            raise Bad("tensor %r: data_offsets %r do not fit shape %r %s / buffer %d" % (name, offs, shape, dtype, len(buf)))
        ranges.append((begin, end, name))
        tensors[name] = (dtype, shape, decode(dtype, buf[begin:end], numel))
    pos = 0
    for begin, end, name in sorted(ranges):
        if begin != pos:
            raise Bad("tensor %r starts at %d, expected %d (gap or overlap)" % (name, begin, pos))
        pos = end
    if pos != len(buf):
        raise Bad("data buffer bytes [%d, %d) not covered by any tensor" % (pos, len(buf)))
    return tensors, meta


def same(a, b, tol):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float) and math.isinf(a):
        return a == b
    return abs(a - b) <= tol


def check(path, sidecar):
    tensors, meta = load(path)
    want = sidecar.get("tensors", {})
    tol = float(sidecar.get("tolerance", 0.0))
    if sidecar.get("exact", True) and set(want) != set(tensors):
        raise Bad("tensor names %s != expected %s" % (sorted(tensors), sorted(want)))
    for key, value in sidecar.get("metadata", {}).items():
        if meta.get(key) != value:
            raise Bad("metadata %r = %r, expected %r" % (key, meta.get(key), value))
    for name, exp in want.items():
        if name not in tensors:
            raise Bad("tensor %r missing" % name)
        dtype, shape, values = tensors[name]
        if "dtype" in exp and exp["dtype"] != dtype:
            raise Bad("tensor %r dtype %s, expected %s" % (name, dtype, exp["dtype"]))
        if "shape" in exp and list(exp["shape"]) != shape:
            raise Bad("tensor %r shape %r, expected %r" % (name, shape, exp["shape"]))
        if "values" in exp:
            ev = exp["values"]
            if len(ev) != len(values):
                raise Bad("tensor %r has %d values, expected %d" % (name, len(values), len(ev)))
            for i, (got, e) in enumerate(zip(values, ev)):
                if not same(float(e), float(got), tol):
                    raise Bad("tensor %r value %d = %r, expected %r" % (name, i, got, e))
    return len(tensors)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[2]) as f:
            sidecar = json.load(f)
    except (OSError, ValueError) as e:
        print("safetensors_interop: sidecar %s: %s" % (argv[2], e), file=sys.stderr)
        return 2
    try:
        n = check(argv[1], sidecar)
    except (Bad, OSError, ValueError, struct.error) as e:
        print("safetensors_interop: %s: %s" % (argv[1], e), file=sys.stderr)
        return 1
    print("safetensors_interop: %s: %d tensors ok" % (argv[1], n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

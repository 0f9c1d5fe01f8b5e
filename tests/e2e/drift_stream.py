#!/usr/bin/python3
"""Writes a Fashion-MNIST event stream with a drift as JSONL, for the gate's end-to-end tests.

usage: drift_stream.py FM_DIR OUT KIND N [ARG]
  iid N              the first N training images, in file order
  classinc N         5 tasks of 2 classes ((0,1), (2,3), ... (8,9)), N events each, task after task
  shift N            N images; from the midpoint on the label is (y + 1) mod 10
  broken N AT        N images; from event AT on the label is 0 (an upstream default)
  test N SHIFT       the first N test images with labels (y + SHIFT) mod 10 (for `eddy eval`)
Events: {"id": "KIND-i", "label": y, "dense": [784 pixels / 255, 3 decimals]}. Standard library
only (the tests run /usr/bin/python3)."""
import gzip
import json
import os
import struct
import sys


def load(fm_dir, split):
    with gzip.open(os.path.join(fm_dir, f"{split}-images-idx3-ubyte.gz")) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, "not an IDX image file"
        pixels = f.read(n * rows * cols)
    with gzip.open(os.path.join(fm_dir, f"{split}-labels-idx1-ubyte.gz")) as f:
        magic, m = struct.unpack(">II", f.read(8))
        assert magic == 2049 and m == n, "labels do not match the images"
        labels = f.read(n)
    size = rows * cols
    return [(pixels[i * size:(i + 1) * size], labels[i]) for i in range(n)]


def event(kind, i, img, label):
    dense = ",".join("0" if p == 0 else ("%.3f" % (p / 255)).rstrip("0") for p in img)
    return '{"id":"%s-%d","label":%d,"dense":[%s]}\n' % (kind, i, label, dense)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    fm_dir, out, kind, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    data = load(fm_dir, "t10k" if kind == "test" else "train")
    rows = []
    if kind == "iid":
        rows = [(img, y) for img, y in data[:n]]
    elif kind == "classinc":
        for task in range(5):
            pick = [(img, y) for img, y in data if y in (2 * task, 2 * task + 1)][:n]
            assert len(pick) == n, "not enough images for task %d" % task
            rows += pick
    elif kind == "shift":
        rows = [(img, y if i < n // 2 else (y + 1) % 10) for i, (img, y) in enumerate(data[:n])]
    elif kind == "test":
        shift = int(sys.argv[5])
        rows = [(img, (y + shift) % 10) for img, y in data[:n]]
    elif kind == "broken":
        at = int(sys.argv[5])
        rows = [(img, y if i < at else 0) for i, (img, y) in enumerate(data[:n])]
    else:
        sys.exit("unknown KIND %r\n%s" % (kind, __doc__))
    with open(out, "w") as f:
        for i, (img, y) in enumerate(rows):
            f.write(event(kind, i, img, y))
    json.dump({"events": len(rows)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Holds abusive HTTP connections against services and probes them meanwhile (for
http_abuse.sh). For every PORT given: PER_PORT connections from the loopback addresses
127.0.0.2..127.0.0.21, three kinds in equal parts:
  partial  request headers that never end (no blank line), then silence;
  large    POST /v1/predict with Content-Length 10 MB (over the body cap) and no body: answered
           at once (413 on a replica; the trainer has no such route: 404);
  small    POST with Content-Length 900 (under the cap) and no body: held by the server.
While the partial and small ones are open, GET /healthz and /metrics on every port from
127.0.0.1, PROBES times each, on a fresh connection with a 1 s limit. Then PER_CLIENT + 40
connections from 127.0.0.99 to the first port: the server must keep exactly PER_CLIENT of them.
Then it waits until HEADER_TIMEOUT + 2 s after the last partial one opened and counts how many
the server closed. Prints one JSON object with the figures; the shell test judges them.
usage: http_abuse.py PER_PORT PER_CLIENT HEADER_TIMEOUT PROBES PORT..."""
import json
import socket
import sys
import time

per_port, per_client, header_timeout, probes = (int(a) for a in sys.argv[1:5])
ports = [int(p) for p in sys.argv[5:]]
SOURCES = ["127.0.0.%d" % i for i in range(2, 22)]


def connect(port, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s):
    """True when the server has closed s (end of stream or reset), False while it is open."""
    s.setblocking(False)
    try:
        return s.recv(65536, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def read_status(s, limit):
    """The status code of the response on s within limit seconds, or None."""
    s.settimeout(limit)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/1.") else None


def probe(port, path):
    """Seconds a GET of path took and its status (None when it failed or took over 1 s)."""
    t0 = time.monotonic()
    status = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n" % path.encode())
        status = read_status(s, max(0.01, 1 - (time.monotonic() - t0)))
        s.close()
    except OSError:
        pass
    took = time.monotonic() - t0
    return took, status if took <= 1 else None


result = {"ports": {}}
opened_at = last_partial = time.monotonic()
held = {}
for port in ports:
    kinds = {"partial": [], "large": [], "small": [], "connect_errors": 0}
    for i in range(per_port):
        kind = ("partial", "large", "small")[i % 3]
        try:
            s = connect(port, SOURCES[i % len(SOURCES)])
        except OSError:
            kinds["connect_errors"] += 1
            continue
        if kind == "partial":
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: abuse\r\nX-Slow: ")
        elif kind == "large":
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: abuse\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 10485760\r\n\r\n")
        else:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: abuse\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 900\r\n\r\n")
        kinds[kind].append(s)
        if kind == "partial":
            last_partial = time.monotonic()
    held[port] = kinds
opened_s = time.monotonic() - opened_at

# The large ones: answered at once (read_status waits 1 s at most for each).
for port, kinds in held.items():
    t0 = time.monotonic()
    statuses = [read_status(s, 1) for s in kinds["large"]]
    r = result["ports"][str(port)] = {
        "connect_errors": kinds["connect_errors"],
        "large": len(kinds["large"]),
        "large_statuses": {str(st): statuses.count(st) for st in set(statuses)},
        "large_read_seconds": round(time.monotonic() - t0, 2),
    }
    r["partial_open"] = sum(1 for s in kinds["partial"] if not closed_by_server(s))
    r["small_open"] = sum(1 for s in kinds["small"] if not closed_by_server(s))

# Probes while the others are held.
for port in ports:
    r = result["ports"][str(port)]
    for path in ("/healthz", "/metrics"):
        times = [probe(port, path) for _ in range(probes)]
        r[path] = {"answered": sum(1 for _, st in times if st is not None),
                   "max_seconds": round(max(t for t, _ in times), 3),
                   "statuses": sorted({st for _, st in times if st is not None})}
result["probed_after_s"] = round(time.monotonic() - opened_at, 1)

# One client over its limit.
mine = []
for _ in range(per_client + 40):
    try:
        mine.append(connect(ports[0], "127.0.0.99"))
    except OSError:
        pass
time.sleep(1)
result["one_client_open"] = sum(1 for s in mine if not closed_by_server(s))
for s in mine:
    s.close()

# The partial ones after the header deadline (counted from the last one opened).
time.sleep(max(0, last_partial + header_timeout + 2 - time.monotonic()))
for port, kinds in held.items():
    r = result["ports"][str(port)]
    r["partial_closed_after_deadline"] = sum(1 for s in kinds["partial"] if closed_by_server(s))
    r["partial"] = len(kinds["partial"])
    for s in kinds["partial"] + kinds["large"] + kinds["small"]:
        s.close()
result["opened_seconds"] = round(opened_s, 2)
print(json.dumps(result))

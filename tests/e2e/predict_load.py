"""Load generator for the replica tests: THREADS threads per replica URL, each POSTing BODY to
/v1/predict over a keep-alive connection until STOP_FILE exists (or SECONDS pass). Writes one JSON
summary: requests, failures by reason, versions seen (X-Eddy-Version counts), and the first few
failure details. With PREDICT_LOAD_PAUSE=S in the environment each thread waits S seconds after
every request (a bounded load for tests that share two cores).
  predict_load.py OUT.json BODY_FILE STOP_FILE SECONDS THREADS URL..."""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

out_path, body_path, stop_file, seconds, threads = sys.argv[1:6]
urls = sys.argv[6:]
body = open(body_path, "rb").read()
deadline = time.time() + float(seconds)
pause = float(os.environ.get("PREDICT_LOAD_PAUSE", "0"))
lock = threading.Lock()
summary = {"requests": 0, "ok": 0, "failures": {}, "versions": {}, "details": []}


def worker(url):
    u = urllib.parse.urlparse(url)
    conn = None
    while time.time() < deadline and not os.path.exists(stop_file):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            version = r.getheader("X-Eddy-Version")
            ok = r.status == 200 and version is not None
            if ok:
                j = json.loads(data)
                ok = str(j.get("version")) == version and len(j.get("predictions", [])) > 0
            with lock:
                summary["requests"] += 1
                if ok:
                    summary["ok"] += 1
                    summary["versions"][version] = summary["versions"].get(version, 0) + 1
                else:
                    key = "http %d" % r.status
                    summary["failures"][key] = summary["failures"].get(key, 0) + 1
                    if len(summary["details"]) < 5:
                        summary["details"].append(data[:200].decode("utf-8", "replace"))
        except Exception as e:  # a dropped connection is a failed request
            with lock:
                summary["requests"] += 1
                key = type(e).__name__
                summary["failures"][key] = summary["failures"].get(key, 0) + 1
                if len(summary["details"]) < 5:
                    summary["details"].append(repr(e))
            conn = None
        if pause:
            time.sleep(pause)


ts = [threading.Thread(target=worker, args=(u,)) for u in urls for _ in range(int(threads))]
for t in ts:
    t.start()
for t in ts:
    t.join()
json.dump(summary, open(out_path, "w"))

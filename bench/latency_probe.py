#!/usr/bin/env python3
"""usage: latency_probe.py URL BODY_FILE SECONDS [HEADER=VALUE ...]   (bench only)

One client on one keep-alive connection posting BODY_FILE to URL (127.0.0.1 only)
back to back for SECONDS, timing every answer, then one line with the count and the
p50/p99 latency per status code, e.g.

    200: n=812 p50=3.10ms p99=9.80ms; 429: n=4410 p50=0.21ms p99=0.64ms

Run beside a load generator to see what one status costs apart from the others
(wrk reports one latency over every answer): issue 9's "429 p99 < 1 ms" under 10x
overload. The times include this client's own overhead (Python, on a CPU shared with
the load generator), so they are upper bounds.
"""

import http.client
import sys
import time
import urllib.parse


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, int(round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url = urllib.parse.urlsplit(sys.argv[1])
    if url.hostname not in ("127.0.0.1", "localhost"):
        sys.exit(f"refusing non-loopback URL: {sys.argv[1]}")
    body = open(sys.argv[2], "rb").read()
    seconds = float(sys.argv[3])
    headers = {"Content-Type": "application/octet-stream"}
    for pair in sys.argv[4:]:
        name, _, value = pair.partition("=")
        headers[name] = value
    by_status = {}
    errors = 0
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            conn.request("POST", url.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        by_status.setdefault(response.status, []).append(elapsed_ms)
    parts = []
    for status in sorted(by_status):
        values = sorted(by_status[status])
        parts.append(
            f"{status}: n={len(values)} p50={percentile(values, 50):.2f}ms "
            f"p99={percentile(values, 99):.2f}ms"
        )
    print(f"{'; '.join(parts) or 'no answers'}; errors={errors}")


if __name__ == "__main__":
    main()

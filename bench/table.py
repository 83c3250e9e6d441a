#!/usr/bin/env python3
"""Turns the raw lines of bench/run.sh into one Markdown table and the target checks.

usage: table.py RAW.txt
Every ratio compares figures from the same run.
"""
import re
import sys

PEERS = ["mlserver", "triton", "flask", "fastapi", "bentoml"]


def fields(line):
    return dict(re.findall(r"([\w/]+)=([^\s;]+)", line))


def ms(v):
    return float(v.rstrip("ms")) if v else float("nan")


def main(path):
    rest, grpc, ab, cnn, mem, overload, notes = {}, {}, {}, {}, {}, [], []
    probe = None
    for line in open(path):
        line = line.strip()
        if line.startswith("#"):
            notes.append(line[1:].strip())
            continue
        kind, name, rest_of = (line.split(" ", 2) + ["", ""])[:3]
        f = fields(rest_of)
        if kind == "rest":
            rest[(name, int(f["c"]))] = f
        elif kind == "grpc":
            grpc[(name, int(f["c"]))] = f
        elif kind == "ab":
            rps = re.search(r"Requests per second: ([\d.]+)", rest_of)
            failed = re.search(r"Failed requests: (\d+)", rest_of)
            non2xx = re.search(r"Non-2xx responses: (\d+)", rest_of)
            ab[name] = (float(rps.group(1)) if rps else float("nan"),
                        int(failed.group(1)) if failed else 0, int(non2xx.group(1)) if non2xx else 0)
        elif kind == "cnn":
            cnn[name] = f
        elif kind == "mem":
            mem[name] = f
        elif kind == "overload":
            overload.append((name, f))
        elif kind == "probe":
            probe = rest_of

    print("| measure | server | c | req/s | p50 | p99 | errors | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    best_peer = {}
    for c in (1, 10, 64):
        peers = [(float(rest[(p, c)]["req/s"]), p) for p in PEERS if (p, c) in rest]
        best_peer[c] = max(peers) if peers else (float("nan"), "none")
        bare = float(rest[("bare", c)]["req/s"]) if ("bare", c) in rest else float("nan")
        for name in ["ferroserve", "ferroserve-batching", "ferroserve-v2", "bare"] + PEERS:
            f = rest.get((name, c))
            if not f:
                continue
            rps = float(f["req/s"])
            ratio = f"{rps / best_peer[c][0]:.1f}x best peer ({best_peer[c][1]})"
            if name.startswith("ferroserve"):
                ratio += f", {rps / bare:.2f}x bare"
            print(f"| REST 1-row iris | {name} | {c} | {rps:.0f} | {f['p50']} | {f['p99']} | {f['errors']} | {ratio} |")
    for c in (1, 10, 64):
        tri = grpc.get(("triton", c))
        for name in ("ferroserve", "triton"):
            f = grpc.get((name, c))
            if not f:
                continue
            rps = float(f["req/s"])
            ratio = f"{rps / float(tri['req/s']):.1f}x Triton" if tri and name != "triton" else ""
            print(f"| gRPC ModelInfer | {name} | {c} | {rps:.0f} | mean {f.get('mean', '')} | max {f.get('max', '')} | {int(f.get('n', 0)) - int(f.get('2xx', 0))} | {ratio} |")
    for name, (rps, failed, non2xx) in ab.items():
        ratio = f"{rps / ab['fastapi'][0]:.1f}x fastapi" if "fastapi" in ab and name != "fastapi" else ""
        print(f"| ab -n 1000 -c 10 | {name} | 10 | {rps:.0f} | | | {failed + non2xx} | {ratio} |")
    ort = float(cnn["ort_inprocess"]["rows/s"]) if "ort_inprocess" in cnn else float("nan")
    for name in ("cnn_batched", "cnn_single"):
        f = cnn.get(name)
        if f:
            rps = float(f["req/s"])
            print(f"| CNN (PP-OCR cls) | ferroserve {name} | 64 | {rps:.0f} | {f['p50']} | {f['p99']} | {f['errors']} | {rps / ort:.2f}x ORT in-process |")
    if "ort_inprocess" in cnn:
        print(f"| CNN (PP-OCR cls) | ONNX Runtime in-process, batch {cnn['ort_inprocess'].get('batch')} | | {ort:.0f} | | | | 1 |")
    for name, f in mem.items():
        rss = int(f.get("rss_kb") or 0) / 1024
        print(f"| RSS / start-to-ready | {name} | | | | | | {rss:.0f} MiB, ready in {int(f['ready_ms'])} ms |")
    for phase, f in overload:
        print(f"| overload (CNN, queue 64) | ferroserve {phase} | {f.get('c')} | {f.get('ok/s')} ok | {f.get('p50')} | {f.get('p99')} | {f.get('other')} other, {f.get('sockerr')} socket | {f.get('429/s')} 429/s |")

    print()
    for n in notes:
        print(f"- {n}")
    print()
    c10 = rest.get(("ferroserve", 10))
    c10b = rest.get(("ferroserve-batching", 10))
    if c10 and ("bare", 10) in rest:
        bare = float(rest[("bare", 10)]["req/s"])
        for label, f in (("batching off", c10), ("batching on", c10b)):
            if not f:
                continue
            rps = float(f["req/s"])
            print(f"- target REST c=10 ({label}): {rps / best_peer[10][0]:.1f}x best peer (>= 30x: "
                  f"{'met' if rps >= 30 * best_peer[10][0] else 'NOT met'}), {rps / bare:.2f}x bare (>= 0.7x: "
                  f"{'met' if rps >= 0.7 * bare else 'NOT met'}), p99 {f['p99']} (< 1 ms: "
                  f"{'met' if ms(f['p99']) < 1 else 'NOT met'})")
    for c in (1, 10, 64):
        if ("ferroserve", c) in grpc and ("triton", c) in grpc:
            r = float(grpc[("ferroserve", c)]["req/s"]) / float(grpc[("triton", c)]["req/s"])
            print(f"- target gRPC c={c}: {r:.1f}x Triton (>= 20x: {'met' if r >= 20 else 'NOT met'})")
    if "cnn_batched" in cnn and ort == ort:
        r = float(cnn["cnn_batched"]["req/s"]) / ort
        print(f"- target CNN batching c=64: {r:.2f}x ORT in-process (>= 0.9x: {'met' if r >= 0.9 else 'NOT met'})")
    if len(overload) == 3:
        before, during, after = (float(f["ok/s"]) for _, f in overload)
        shed = float(overload[1][1]["429/s"])
        print(f"- target overload: answered {during / before:.2f}x capacity under 10x load, "
              f"{shed:.0f} 429/s, p50 {overload[1][1]['p50']}; after: {after / before:.2f}x capacity, "
              f"{overload[2][1]['429/s']} 429/s")
    if probe:
        m = re.search(r"429: n=\d+ p50=[\d.]+ms p99=([\d.]+)ms", probe)
        verdict = "no 429 seen" if not m else (
            "met" if float(m.group(1)) < 1.0 else "NOT met")
        print(f"- target 429 p99 < 1 ms under overload (one probe client): {probe} ({verdict})")


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Runs every workload for every transport, interleaved, and reports medians.

Each repetition runs every row for every transport in turn, so slow phases
of a noisy machine hit all transports alike; ratios to raw-buffered are
taken within one repetition, then the median of those ratios is reported.
Writes a Markdown results file and (with gnuplot) a PNG chart of the ratios.
Exit status 1 if any run failed (a content or count mismatch included).
"""
import argparse
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys

# Columns: (name, program, extra argument).  sockmsg-more is the fast path
# for streams: SM_MORE on the sender, sm_recv_view on the receiver.
COLUMNS = [
    ("raw-naive", "raw-naive", None),
    ("raw-buffered", "raw-buffered", "more"),
    ("sockmsg", "sockmsg", None),
    ("sockmsg-more", "sockmsg", "more"),
    ("zmq", "zmq", None),
    ("nng", "nng", None),
]
BASE = "raw-buffered"

# Rows: (key, label, workload, size, figure, unit, higher_is_better, counts)
# counts: the default count, then overrides per column, sized so one run
# takes about a second here.
ROWS = [
    ("lat64", "RTT 64 B, mean", "lat", 64, "mean_us", "µs", False, (20000, {})),
    ("lat1k", "RTT 1 KiB, mean", "lat", 1024, "mean_us", "µs", False, (20000, {})),
    ("thr64", "64 B one-way", "thr", 64, "msgs_per_s", "M msg/s", True,
     (1000000, {"raw-buffered": 20000000, "sockmsg-more": 20000000, "zmq": 4000000,
                "nng": 100000})),
    ("thr1k", "1 KiB one-way", "thr", 1024, "msgs_per_s", "M msg/s", True,
     (500000, {"raw-buffered": 3000000, "sockmsg-more": 3000000, "zmq": 1000000,
               "nng": 100000})),
    ("thr64k", "64 KiB one-way", "thr", 65536, "mb_per_s", "GB/s", True, (20000, {})),
    ("thr1m", "1 MiB one-way", "thr", 1048576, "mb_per_s", "GB/s", True, (1000, {})),
    ("srv1k", "1,000 clients echoing", "server", 1000, "trips_per_s", "k trips/s", True,
     (100, {})),
    ("conns", "10,000 conns, server RSS per idle conn", "server", 10000,
     "rss_kib_per_conn", "KiB", False, (1, {})),
]
SCALE = {"M msg/s": 1e-6, "GB/s": 1e-3, "k trips/s": 1e-3, "µs": 1, "KiB": 1}
# ZeroMQ spends two descriptors per client socket: with a 20,000 limit
# its client side holds at most about 9,900, so its row uses 5,000.
CONNS_FOR = {"zmq": 5000}

TARGETS = [
    # (text, row, column, against, "le"/"ge", bound); time ratios for lat
    ("RTT 64 B ≤ 1.05× raw-naive", "lat64", "sockmsg", ["raw-naive"], "le", 1.05),
    ("RTT 64 B ≤ 0.7× the faster of ZeroMQ and nng", "lat64", "sockmsg", ["zmq", "nng"], "le", 0.7),
    ("64 B one-way, SM_MORE ≥ 0.8× raw-buffered", "thr64", "sockmsg-more", ["raw-buffered"], "ge", 0.8),
    ("64 B one-way, plain sm_send ≥ 1.0× raw-naive", "thr64", "sockmsg", ["raw-naive"], "ge", 1.0),
    ("1 KiB one-way, SM_MORE ≥ 0.8× raw-buffered", "thr1k", "sockmsg-more", ["raw-buffered"], "ge", 0.8),
    ("1 MiB one-way ≥ 0.9× raw-buffered", "thr1m", "sockmsg", ["raw-buffered"], "ge", 0.9),
    ("1,000 clients: round trips/s ≥ 0.8× raw epoll", "srv1k", "sockmsg", ["raw-buffered"], "ge", 0.8),
]


def run_one(prog, args, timeout):
    """Runs a benchmark program; returns (status, fields)."""
    proc = subprocess.Popen([prog] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the program and its server child
        proc.communicate()
        return "timed out", {}
    if proc.returncode == 3:
        return "unsupported", {}
    if proc.returncode != 0:
        sys.stderr.write(err)
        return "failed", {}
    line = out.strip().splitlines()[-1]
    return "ok", dict(kv.split("=", 1) for kv in line.split())


def row_args(row, column, quick):
    key, _, workload, size, _, _, _, (count, over) = row
    count = over.get(column, count)
    if workload == "server":
        conns = CONNS_FOR.get(column, size) if key == "conns" else size
        if quick:
            conns, count = min(conns, 2000), min(count, 10)
        return ["server", str(conns), str(count)]
    if quick:
        count = max(count // 20, 100)
    return [workload, str(size), str(count)]


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, loopback"


def version_of(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def collect(build, columns, reps, quick, log):
    """results[row][column] = list of per-repetition figures or a status."""
    results = {row[0]: {c: [] for c in columns} for row in ROWS}
    status = {}
    for rep in range(reps):
        for row in ROWS:
            key, figure = row[0], row[4]
            for name, prog, extra in COLUMNS:
                if name not in columns or status.get((key, name)) in ("unsupported", "failed",
                                                                      "timed out"):
                    continue
                if row[2] == "server" and name == "sockmsg-more":
                    continue  # one sockmsg server: it has no "more" variant
                args = row_args(row, name, quick) + ([extra] if extra and row[2] != "server" else [])
                st, fields = run_one(os.path.join(build, "bench", "bench-" + prog), args, 300)
                log(f"rep {rep + 1}/{reps} {key:6} {name:13} {st} {fields.get(figure, '')}")
                if st != "ok":
                    status[(key, name)] = st
                    continue
                results[key][name].append(float(fields[figure]))
    return results, status


def fmt(v, unit):
    v *= SCALE[unit]
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def cell(values, unit):
    if not values:
        return None
    med = statistics.median(values)
    spread = f" ({fmt(min(values), unit)}–{fmt(max(values), unit)})" if len(values) > 1 else ""
    return fmt(med, unit) + spread


def speed_ratios(row, results, column, base):
    """Per-repetition speed relative to base (> 1: faster)."""
    a, b = results[row[0]][column], results[row[0]][base]
    n = min(len(a), len(b))
    if row[6]:
        return [a[i] / b[i] for i in range(n) if b[i] > 0]
    return [b[i] / a[i] for i in range(n) if a[i] > 0]


def missing(name, installed, status, key):
    if name not in installed:
        return "not installed"
    return {"unsupported": "n/a", "failed": "FAILED", "timed out": "TIMED OUT"}.get(
        status.get((key, name)), "—")


def tables(results, status, columns, installed):
    head = "| | " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS)
    abs_lines, ratio_lines = [head], [head]
    for row in ROWS:
        key, label, unit = row[0], row[1], row[5]
        a_cells, r_cells = [], []
        for name, _, _ in COLUMNS:
            c = cell(results[key].get(name, []), unit)
            a_cells.append(c or missing(name, installed, status, key))
            r = speed_ratios(row, results, name, BASE) if name in columns and BASE in columns else []
            r_cells.append(f"{statistics.median(r):.2f}×" if r else
                           missing(name, installed, status, key))
        abs_lines.append(f"| {label} ({unit}) | " + " | ".join(a_cells) + " |")
        if key != "conns":
            ratio_lines.append(f"| {label} | " + " | ".join(r_cells) + " |")
    return "\n".join(abs_lines), "\n".join(ratio_lines)


def target_table(results):
    lines = ["| target | measured (median of per-repetition ratios) | met |", "|---|---:|---|"]
    rows = {r[0]: r for r in ROWS}
    for text, key, column, against, op, bound in TARGETS:
        row, mine = rows[key], results[key].get(column, [])
        others = [results[key].get(o, []) for o in against if results[key].get(o)]
        n = min([len(mine)] + [len(o) for o in others]) if others else 0
        if not mine or n == 0:
            lines.append(f"| {text} | not measured | — |")
            continue
        # the best competitor in each repetition
        best = [(max if row[6] else min)(o[i] for o in others) for i in range(n)]
        ratio = statistics.median(mine[i] / best[i] for i in range(n))
        met = ratio <= bound if op == "le" else ratio >= bound
        lines.append(f"| {text} | {ratio:.2f}× | {'yes' if met else 'NO'} |")
    conns = results["conns"].get("sockmsg", [])
    if conns:
        kib = statistics.median(conns)
        lines.append(f"| 10,000 clients held with < 1 KiB RSS per idle connection | "
                     f"{kib:.3f} KiB | {'yes' if kib < 1 else 'NO'} |")
    return "\n".join(lines)


def chart(results, columns, path, date):
    """Grouped bars of speed relative to raw-buffered, log scale."""
    names = [c for c, _, _ in COLUMNS if c in columns]
    data = os.path.splitext(path)[0] + ".dat"
    with open(data, "w") as f:
        for row in ROWS:
            if row[0] == "conns":
                continue
            vals = []
            for name in names:
                r = speed_ratios(row, results, name, BASE)
                vals.append(f"{statistics.median(r):.4f}" if r else "NaN")
            f.write('"' + row[1] + '" ' + " ".join(vals) + "\n")
    plots = ", ".join(f"'{data}' using {i + 2}:xtic(1) title '{n}'" for i, n in enumerate(names))
    script = f"""set terminal pngcairo size 1100,520 font ',10'
set output '{path}'
set title 'Speed relative to raw-buffered (> 1 is faster), median of repetitions, {date}'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [0.001:4]
set grid ytics
set key outside right
set xtics rotate by -20 scale 0
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2
plot {plots}
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"chart skipped: gnuplot: {e}", file=sys.stderr)
        return False
    finally:
        os.remove(data)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--transports", default="sockmsg raw-naive raw-buffered zmq nng")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS", 5)))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--chart", default="docs/bench-ratios.png")
    args = ap.parse_args()

    built = set(args.transports.split())
    installed = {c for c, p, _ in COLUMNS
                 if os.path.exists(os.path.join(args.build, "bench", "bench-" + p))}
    columns = {c for c, p, _ in COLUMNS if p in built} & installed
    reps = 1 if args.quick else max(args.reps, 3)
    date = datetime.date.today().isoformat()
    start = datetime.datetime.now()
    results, status = collect(args.build, columns, reps, args.quick,
                              lambda s: print(s, flush=True))
    absolute, ratios = tables(results, status, columns, installed)
    minutes = (datetime.datetime.now() - start).total_seconds() / 60
    zmq = version_of(["pkg-config", "--modversion", "libzmq"])
    nng = version_of(["dpkg-query", "-W", "-f", "${Version}", "libnng-dev"])
    cmd = "make bench" + (" QUICK=1" if args.quick else "")
    text = f"""# Benchmark results, {date}{' (QUICK smoke run)' if args.quick else ''}

- Machine: {machine()}; unpinned, other load not controlled.
- Command: `{cmd}` ({reps} repetitions, transports interleaved in each; {minutes:.1f} min).
- Baselines: ZeroMQ {zmq}, nng {nng}.
- Every message is checked (sequence number in each, whole payload on a
  sample and on the last); a mismatch fails the run.
- sockmsg is the plain API (`sm_send`, `sm_recv` into a buffer);
  sockmsg-more is the fast path for streams (`SM_MORE` + `sm_recv_view`).
  raw-buffered coalesces sends in 64 KiB and parses in place; the server
  rows use its epoll echo server, ZeroMQ's ROUTER/DEALER and `sm_server`.
  nng cannot address one connection of many: no server workload (n/a).
  ZeroMQ's client side holds two descriptors per socket, so its connection
  row uses 5,000 clients.

## Medians (min–max over repetitions)

{absolute}

## Speed relative to raw-buffered, in the same repetition (> 1 is faster)

Median of the per-repetition ratios; for round-trip times the ratio is
raw-buffered's time over the transport's.

{ratios}

## Targets (issue 5)

Ratios of the figures themselves (times for RTT, rates otherwise), per
repetition against the best named competitor, median over repetitions.

{target_table(results)}
"""
    if args.quick:
        out = os.path.join(args.build, f"bench-quick-{date}.md")
    else:
        os.makedirs(args.out, exist_ok=True)
        out = os.path.join(args.out, f"{date}.md")
    with open(out, "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"results written to {out}")
    if not args.quick and BASE in columns and chart(results, columns, args.chart, date):
        print(f"chart written to {args.chart}")
    failed = [k for k, v in status.items() if v in ("failed", "timed out")]
    if failed:
        print(f"FAILED runs: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

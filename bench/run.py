#!/usr/bin/env python3
"""Runs every workload for every transport, interleaved, and reports medians.

Each repetition runs every row for every transport in turn, so slow phases
of a noisy machine hit all transports alike; ratios to raw-buffered (the
strong hand-written baseline) are taken within one repetition, then the
median of those ratios is reported.
The TLS transports (sockmsg-tls, raw-tls) have a section of their own,
with ratios to raw-tls (OpenSSL by hand) and certificates made for the run.
So do sockmsg-nb and sockmsg-uv, the library inside the application's own
loop, against sockmsg (bench/inloop.py).
Writes a Markdown results file and (with gnuplot) a PNG chart of the ratios.
Exit status 1 if any run failed (a content or count mismatch included).
"""
import argparse
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

import inloop  # bench/inloop.py: the section "Inside someone else's event loop"

# Columns: (name, program, extra argument).  sockmsg-more is the fast path
# for streams: SM_MORE on the sender, sm_recv_view on the receiver.
# raw-buffered-64k is raw-buffered as it was up to 2026-11-25 (64 KiB
# receive buffer), kept to show how much of a ratio's change is the
# baseline's; every ratio is to the strong raw-buffered.
COLUMNS = [
    ("raw-naive", "raw-naive", None),
    ("raw-buffered", "raw-buffered", "more"),
    ("raw-buffered-64k", "raw-buffered-64k", "more"),
    ("sockmsg", "sockmsg", None),
    ("sockmsg-more", "sockmsg", "more"),
    ("zmq", "zmq", None),
    ("nng", "nng", None),
]
BASE = "raw-buffered"

# Rows: (key, label, workload, size, figure, unit, higher_is_better, counts)
# counts: the default count, then overrides per column, sized so one run
# takes about a second here.  For the server rows, size is the number of
# clients; for connect, the number of connections ({n} in the label) and
# the count is the echoes on each.
ROWS = [
    ("lat64", "RTT 64 B, mean", "lat", 64, "mean_us", "µs", False, (20000, {})),
    ("lat1k", "RTT 1 KiB, mean", "lat", 1024, "mean_us", "µs", False, (20000, {})),
    ("thr64", "64 B one-way", "thr", 64, "msgs_per_s", "M msg/s", True,
     (1000000, {"raw-buffered": 20000000, "raw-buffered-64k": 20000000,
                "sockmsg-more": 20000000, "zmq": 4000000, "nng": 100000})),
    ("thr1k", "1 KiB one-way", "thr", 1024, "msgs_per_s", "M msg/s", True,
     (500000, {"raw-buffered": 3000000, "raw-buffered-64k": 3000000,
               "sockmsg-more": 3000000, "zmq": 1000000, "nng": 100000})),
    ("thr64k", "64 KiB one-way", "thr", 65536, "mb_per_s", "GB/s", True, (20000, {})),
    ("thr1m", "1 MiB one-way", "thr", 1048576, "mb_per_s", "GB/s", True, (1000, {})),
    ("srv1k", "1,000 clients echoing", "server", 1000, "trips_per_s", "k trips/s", True,
     (100, {})),
    ("conns", "{n} conns, server RSS per idle conn", "server", 10000,
     "rss_kib_per_conn", "KiB", False, (1, {})),
    ("connect", "{n} connections opened at once, one echo each", "conn", 5000,
     "total_ms", "ms", False, (1, {})),
]
# Rows whose cells are not the columns' own programs: column -> (program,
# extra argument), None for "—"; a column not named is n/a.  Both connect
# clients talk to one server, sm_server: the raw-buffered cell is the
# hand-written epoll client (bench-sockmsg conn N 1 raw), so its ratio is
# the library's client against a hand-written one.
CELLS = {
    "connect": {"raw-buffered": ("sockmsg", "raw"), "sockmsg": ("sockmsg", None),
                "sockmsg-more": None},
}
QUICK_CONNECTIONS = 500
SCALE = {"M msg/s": 1e-6, "GB/s": 1e-3, "k trips/s": 1e-3, "µs": 1, "KiB": 1, "ms": 1}
# ZeroMQ spends two descriptors per client socket: with a 20,000 limit
# its client side holds at most about 9,900, so its row uses 5,000.
CONNS_FOR = {"zmq": 5000}

# Peers that come and go: sockmsg's dialled links (sm_server_connect).  No
# other transport's server dials, so these are rows of their own, run by
# bench-sockmsg in every repetition after the table's rows.
#   links N ROUNDS dialled|accepted: echo over N links of one sm_server,
#     dialled by it or accepted by it (both sides in each repetition, the
#     order alternating); ROUNDS measured round trips on each
#   reconnect PAUSE_MS TIMES: the echo server behind a dialled link killed
#     and, PAUSE_MS later, restarted on its port, TIMES times per run
LINKS = {"full": (1000, 200), "quick": (250, 20)}
RECONNECT = {"full": (1000, 5), "quick": (300, 3)}
LINKS_TARGET = 0.9      # dialled ≥ 0.9× accepted, round trips/s
RECONNECT_SLACK_MS = 10  # reconnect ≤ the current backoff wait + 10 ms

# TLS (OpenSSL): a section of its own, its ratios to raw-tls, OpenSSL by
# hand.  Columns: (name, program, extra argument, environment).
# sockmsg-tls-keep is sockmsg-tls with SSL_MODE_RELEASE_BUFFERS cleared
# from the library's contexts (BENCH_TLS_KEEP_BUFFERS=1, see
# transport-sockmsg-tls.c), to show what the mode costs.  The certificates
# are made once per run by tests/tls/make-certs.sh into a temporary
# directory (BENCH_TLS_DIR), removed at the end.
TLS_PROGRAMS = ("raw-tls", "sockmsg-tls")
KEEP = {"BENCH_TLS_KEEP_BUFFERS": "1"}
TLS_COLUMNS = [
    ("raw-tls", "raw-tls", None, None),
    ("sockmsg-tls", "sockmsg-tls", None, None),
    ("sockmsg-tls-more", "sockmsg-tls", "more", None),
    ("sockmsg-tls-keep", "sockmsg-tls", None, KEEP),
]
TLS_BASE = "raw-tls"
# Rows as ROWS (the keys are the same as there, so the plain sockmsg
# figure of the same repetition is at hand); counts sized for about a
# second here.
TLS_ROWS = [
    ("lat64", "RTT 64 B, mean", "lat", 64, "mean_us", "µs", False, (20000, {})),
    ("lat1k", "RTT 1 KiB, mean", "lat", 1024, "mean_us", "µs", False, (20000, {})),
    ("thr64", "64 B one-way", "thr", 64, "msgs_per_s", "M msg/s", True,
     (100000, {"sockmsg-tls-more": 2000000})),
    ("thr1k", "1 KiB one-way", "thr", 1024, "msgs_per_s", "M msg/s", True,
     (50000, {"sockmsg-tls-more": 300000})),
    ("thr64k", "64 KiB one-way", "thr", 65536, "mb_per_s", "GB/s", True, (5000, {})),
    ("thr1m", "1 MiB one-way", "thr", 1048576, "mb_per_s", "GB/s", True, (500, {})),
]
TLS_TARGETS = [
    # (text, row, column, "le"/"ge", bound): per-repetition ratio to raw-tls
    ("1 MiB one-way ≥ 0.9× raw-tls", "thr1m", "sockmsg-tls", "ge", 0.9),
    ("RTT 64 B, mean, ≤ 1.1× raw-tls", "lat64", "sockmsg-tls", "le", 1.1),
]
# The echo servers with 1,000 clients: (key, label, program, environment).
# The plain cell is sm_server with the hand-written epoll clients (as the
# sockmsg cell of the 1,000 clients row); the others get the same loop
# with OpenSSL non-blocking on each socket (tlssock.c).
TLS_SERVERS = [
    ("plain", "`sm_server`, plain listener, plain clients", "sockmsg", None),
    ("tls", "`sm_server`, TLS listener", "sockmsg-tls", None),
    ("keep", "`sm_server`, TLS listener, buffers kept", "sockmsg-tls", KEEP),
    ("raw", "raw-tls epoll server (OpenSSL by hand)", "raw-tls", None),
]
TLS_CLIENTS = 1000
TLS_ROUNDS = {"full": 100, "quick": 10}
# Connections one after another, each a full handshake and one echo:
# (key, label, program, extra argument).
TLS_HS = [
    ("plain", "sockmsg client → `sm_server`, plain (no TLS)", "sockmsg", None),
    ("tls", "sockmsg-tls client → `sm_server` TLS", "sockmsg-tls", None),
    ("raw-client", "OpenSSL client → `sm_server` TLS", "sockmsg-tls", "raw"),
    ("raw", "OpenSSL client → OpenSSL server (raw-tls)", "raw-tls", None),
]
TLS_HS_COUNT = {"full": 1000, "quick": 100}

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


def run_one(prog, args, timeout, env=None):
    """Runs a benchmark program (env: variables to add); returns (status, fields)."""
    proc = subprocess.Popen([prog] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env=dict(os.environ, **env) if env else None)
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


def row_size(row, quick, column=None):
    """Clients or connections of a server or conn row in this run."""
    key, size = row[0], row[3]
    if row[2] == "conn":
        return QUICK_CONNECTIONS if quick else size
    conns = CONNS_FOR.get(column, size) if key == "conns" else size
    return min(conns, 2000) if quick else conns


def label(row, quick):
    return row[1].format(n=f"{row_size(row, quick):,}")


def row_args(row, column, quick):
    key, _, workload, size, _, _, _, (count, over) = row
    count = over.get(column, count)
    if workload == "server":
        rounds = min(count, 10) if quick else count
        return ["server", str(row_size(row, quick, column)), str(rounds)]
    if workload == "conn":
        return ["conn", str(row_size(row, quick)), str(count)]
    if quick:
        count = max(count // 20, 100)
    return [workload, str(size), str(count)]


def cell_program(row, name, extra):
    """(program, extra argument) of a cell, None for "—", "n/a" when the
    column has nothing for this row."""
    if row[0] in CELLS:
        return CELLS[row[0]].get(name, "n/a")
    if row[2] == "server" and name == "sockmsg-more":
        return None  # one sockmsg server: it has no "more" variant
    prog = next(p for c, p, _ in COLUMNS if c == name)
    return prog, (extra if row[2] != "server" else None)


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


def collect_peers(build, rep, reps, quick, peers, status, log):
    """One repetition of the dialled-link runs: peers["links"] gets a
    {side: (trips_per_s, open_ms)} per repetition, peers["reconnect"] a
    (reconnect_ms, wait_ms, late_ms) per restart."""
    prog = os.path.join(build, "bench", "bench-sockmsg")
    n, rounds = LINKS["quick" if quick else "full"]
    figures = {}
    for side in ("dialled", "accepted") if rep % 2 == 0 else ("accepted", "dialled"):
        if status.get(("links", side)):
            continue
        st, f = run_one(prog, ["links", str(n), str(rounds), side], 300)
        log(f"rep {rep + 1}/{reps} links  {side:13} {st} {f.get('trips_per_s', '')}")
        if st != "ok":
            status[("links", side)] = st
            continue
        figures[side] = (float(f["trips_per_s"]), float(f["open_ms"]))
    peers["links"].append(figures)
    pause, times = RECONNECT["quick" if quick else "full"]
    if status.get(("reconnect", "sockmsg")):
        return
    st, f = run_one(prog, ["reconnect", str(pause), str(times)], 300)
    log(f"rep {rep + 1}/{reps} reconnect sockmsg {st} {f.get('reconnect_ms', '')} ms "
        f"(wait {f.get('wait_ms', '')} ms)")
    if st != "ok":
        status[("reconnect", "sockmsg")] = st
        return
    lists = [[float(x) for x in f[k].split(",")] for k in ("reconnect_all", "wait_all", "late_all")]
    peers["reconnect"].extend(zip(*lists))


def tls_cell_args(row, column, quick):
    """Arguments of a TLS table cell: row_args with the TLS counts."""
    key, _, workload, size, _, _, _, (count, over) = row
    count = over.get(column, count)
    if quick:
        count = max(count // 20, 100)
    return [workload, str(size), str(count)]


def collect_tls(build, programs, rep, reps, quick, tls, status, log):
    """One repetition of the TLS section: tls["table"][row][column],
    tls["server"][key] and tls["hs"][key] get a figure (dict) per run;
    tls["negotiated"][program] what the last run reported."""
    mode = "quick" if quick else "full"

    def run(kind, key, prog, args, env=None):
        if status.get((kind, key)) or prog not in programs:
            return None
        st, f = run_one(os.path.join(build, "bench", "bench-" + prog), args, 300, env)
        shown = next((f[k] for k in ("mean_us", "msgs_per_s", "trips_per_s", "conns_per_s")
                      if k in f), "")
        log(f"rep {rep + 1}/{reps} {kind:10} {key:16} {st} {shown}")
        if st != "ok":
            status[(kind, key)] = st
            return None
        if "tls" in f:
            tls["negotiated"][prog] = (f["tls"], f["cipher"], f["group"])
        return f

    for row in TLS_ROWS:
        for name, prog, extra, env in TLS_COLUMNS:
            args = tls_cell_args(row, name, quick) + ([extra] if extra else [])
            f = run("tls:" + row[0], name, prog, args, env)
            if f:
                tls["table"][row[0]][name].append(float(f[row[4]]))
                if "p50_us" in f:
                    tls["p50"][row[0]][name].append(float(f["p50_us"]))
    for key, _, prog, env in TLS_SERVERS:
        f = run("tls:server", key, prog,
                ["server", str(TLS_CLIENTS), str(TLS_ROUNDS[mode])], env)
        if f:
            tls["server"][key].append({k: float(f[k]) for k in
                                       ("trips_per_s", "rss_kib_per_conn", "open_s")})
    for key, _, prog, extra in TLS_HS:
        f = run("tls:hs", key, prog, ["hs", str(TLS_HS_COUNT[mode]), "1"] + ([extra] if extra else []))
        if f:
            tls["hs"][key].append({k: float(f[k]) for k in ("conns_per_s", "p50_ms", "p99_ms")})


def collect(build, programs, reps, quick, log):
    """results[row][column] = list of per-repetition figures; status[(row,
    column)] = why a cell has none; peers: the dialled-link runs
    (collect_peers).  programs: those built and selected."""
    results = {row[0]: {c: [] for c, _, _ in COLUMNS} for row in ROWS}
    status = {}
    peers = {"links": [], "reconnect": []}
    tls = {"table": {row[0]: {c[0]: [] for c in TLS_COLUMNS} for row in TLS_ROWS},
           "p50": {row[0]: {c[0]: [] for c in TLS_COLUMNS} for row in TLS_ROWS},
           "server": {c[0]: [] for c in TLS_SERVERS}, "hs": {c[0]: [] for c in TLS_HS},
           "negotiated": {}}
    run_tls = any(p in programs for p in TLS_PROGRAMS)
    for rep in range(reps):
        for row in ROWS:
            key, figure = row[0], row[4]
            for name, _, column_extra in COLUMNS:
                cp = cell_program(row, name, column_extra)
                if cp is None or status.get((key, name)) in ("unsupported", "failed",
                                                             "timed out"):
                    continue
                if cp == "n/a":
                    status[(key, name)] = "unsupported"
                    continue
                prog, extra = cp
                if prog not in programs:
                    continue
                args = row_args(row, name, quick) + ([extra] if extra else [])
                st, fields = run_one(os.path.join(build, "bench", "bench-" + prog), args, 300)
                log(f"rep {rep + 1}/{reps} {key:6} {name:13} {st} {fields.get(figure, '')}")
                if st != "ok":
                    status[(key, name)] = st
                    continue
                results[key][name].append(float(fields[figure]))
        if run_tls:
            collect_tls(build, programs, rep, reps, quick, tls, status, log)
        inloop.collect(run_one, build, programs, rep, reps, quick, status, log)
        if "sockmsg" in programs:
            collect_peers(build, rep, reps, quick, peers, status, log)
    return results, status, peers, tls


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


def missing(row, name, progs, status):
    """Why a cell has no figure.  progs: (selected and built, available)
    programs; ZeroMQ's and nng's are available where the library is."""
    st = status.get((row[0], name))
    if st:
        return {"unsupported": "n/a", "failed": "FAILED", "timed out": "TIMED OUT"}[st]
    cp = cell_program(row, name, None)
    if cp is None or cp == "n/a":
        return cp or "—"
    if cp[0] not in progs[1]:
        return "not installed"
    return "not run" if cp[0] not in progs[0] else "—"


def tables(results, status, progs, quick):
    head = "| | " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS)
    abs_lines, ratio_lines = [head], [head]
    for row in ROWS:
        key, unit = row[0], row[5]
        a_cells, r_cells = [], []
        for name, _, _ in COLUMNS:
            c = cell(results[key][name], unit)
            a_cells.append(c or missing(row, name, progs, status))
            r = speed_ratios(row, results, name, BASE)
            r_cells.append(f"{statistics.median(r):.2f}×" if r else
                           missing(row, name, progs, status))
        abs_lines.append(f"| {label(row, quick)} ({unit}) | " + " | ".join(a_cells) + " |")
        if key != "conns":
            ratio_lines.append(f"| {label(row, quick)} | " + " | ".join(r_cells) + " |")
    return "\n".join(abs_lines), "\n".join(ratio_lines)


def target_table(results, quick):
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
        n = row_size(rows["conns"], quick, "sockmsg")
        lines.append(f"| {n:,} clients held with < 1 KiB RSS per idle connection | "
                     f"{kib:.3f} KiB | {'yes' if kib < 1 else 'NO'} |")
    return "\n".join(lines)


def med_range(values, f=lambda v: f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"):
    """median (min–max) of values."""
    med, dash = f(statistics.median(values)), " to " if min(values) < 0 else "–"
    return med + (f" ({f(min(values))}{dash}{f(max(values))})" if len(values) > 1 else "")


def peers_section(peers, status, progs, quick):
    """The dialled-link figures and their targets, as Markdown."""
    n = LINKS["quick" if quick else "full"][0]
    pause, times = RECONNECT["quick" if quick else "full"]
    why = ("not run" if "sockmsg" in progs[1] else "not installed") \
        if "sockmsg" not in progs[0] else "—"

    def state(key, side):
        st = status.get((key, side))
        return {"failed": "FAILED", "timed out": "TIMED OUT", "unsupported": "n/a"}.get(st, why)

    rows, targets = [], []
    for side in ("dialled", "accepted"):
        v = [p[side][0] for p in peers["links"] if side in p]
        rows.append(f"| {n:,} {side} links echoing (k trips/s) | "
                    f"{med_range([x / 1e3 for x in v]) if v else state('links', side)} |")
    ratios = [p["dialled"][0] / p["accepted"][0] for p in peers["links"]
              if "dialled" in p and "accepted" in p and p["accepted"][0] > 0]
    rows.append("| dialled / accepted, in the same repetition | " +
                (med_range(ratios, lambda v: f"{v:.2f}×") if ratios else "—") + " |")
    opened = [p["dialled"][1] for p in peers["links"] if "dialled" in p]
    rows.append(f"| {n:,} dialled links up, from the first `sm_server_connect` (ms) | "
                f"{med_range(opened) if opened else state('links', 'dialled')} |")
    rc = peers["reconnect"]
    if rc:
        over = [r - w for r, w, _ in rc]
        rows += [
            "| reconnect: listening again → first echo back (ms) | "
            f"{med_range([r for r, _, _ in rc])} |",
            "| the backoff wait current then, `on_retry`'s `delay_ms` (ms) | "
            f"{med_range([w for _, w, _ in rc])} |",
            f"| reconnect − that wait (ms) | {med_range(over, lambda v: f'{v:.1f}')} |",
            "| that try's scheduled time → first echo back (ms) | "
            f"{med_range([x for _, _, x in rc], lambda v: f'{v:.2f}')} |",
        ]
    else:
        rows.append(f"| reconnect: listening again → first echo back (ms) | "
                    f"{state('reconnect', 'sockmsg')} |")
    if ratios:
        med = statistics.median(ratios)
        targets.append(f"| {n:,} links: dialled ≥ {LINKS_TARGET}× accepted, round trips/s | "
                       f"{med:.2f}× | {'yes' if med >= LINKS_TARGET else 'NO'} |")
    else:
        targets.append(f"| {n:,} links: dialled ≥ {LINKS_TARGET}× accepted | not measured | — |")
    if rc:
        worst = max(over)
        targets.append(f"| reconnect ≤ the current backoff wait + {RECONNECT_SLACK_MS} ms, "
                       f"every restart | worst {worst:+.1f} ms over {len(rc)} restarts "
                       f"(median {statistics.median(over):+.1f}) | "
                       f"{'yes' if worst <= RECONNECT_SLACK_MS else 'NO'} |")
    else:
        targets.append(f"| reconnect ≤ the current backoff wait + {RECONNECT_SLACK_MS} ms | "
                       "not measured | — |")
    return f"""## Peers that come and go: sockmsg's dialled links

{n:,} links, {LINKS['quick' if quick else 'full'][1]} measured round trips on each;
reconnect: {times} restarts per repetition, each {pause:,} ms after the kill.
Medians (min–max) over repetitions; the reconnect rows over every restart
of every repetition.

| | sockmsg |
|---|---:|
""" + "\n".join(rows) + """

| target | measured | met |
|---|---:|---|
""" + "\n".join(targets)


def tls_section(tls, results, status, progs, quick):
    """The TLS figures, ratios and targets, as Markdown."""
    mode = "quick" if quick else "full"
    states = {"failed": "FAILED", "timed out": "TIMED OUT", "unsupported": "n/a"}

    def why(kind, key, prog):
        st = status.get((kind, key))
        if st:
            return states[st]
        if prog not in progs[1]:
            return "not installed"
        return "not run" if prog not in progs[0] else "—"

    def ratio(a, b, higher, f=lambda v: f"{v:.2f}×"):
        """Median (min–max) of per-repetition speed ratios of a to b."""
        n = min(len(a), len(b))
        r = [(a[i] / b[i] if higher else b[i] / a[i]) for i in range(n) if a[i] > 0 and b[i] > 0]
        return med_range(r, f) if r else None

    names = [c[0] for c in TLS_COLUMNS]
    head = "| | " + " | ".join(names) + " | sockmsg, plain |\n|---|" + "---:|" * (len(names) + 1)
    absolute, rel = [head], ["| | " + " | ".join(names[1:]) +
                             " | sockmsg-tls / sockmsg, plain |\n|---|" + "---:|" * len(names)]
    for row in TLS_ROWS:
        key, unit, higher = row[0], row[5], row[6]
        cells, rcells = [], []
        for name, prog, _, _ in TLS_COLUMNS:
            v = tls["table"][key][name]
            cells.append(cell(v, unit) or why("tls:" + key, name, prog))
            if name != TLS_BASE:
                rcells.append(ratio(v, tls["table"][key][TLS_BASE], higher) or
                              why("tls:" + key, name, prog))
        plain = results.get(key, {}).get("sockmsg", [])
        cells.append(cell(plain, unit) or why(key, "sockmsg", "sockmsg"))
        rcells.append(ratio(tls["table"][key]["sockmsg-tls"], plain, higher) or "—")
        absolute.append(f"| {row[1]} ({unit}) | " + " | ".join(cells) + " |")
        rel.append(f"| {row[1]} | " + " | ".join(rcells) + " |")

    srv = tls["server"]
    shead = "| | " + " | ".join(c[1] for c in TLS_SERVERS) + " |\n|---|" + "---:|" * len(TLS_SERVERS)
    srows = [shead]
    for label_, field, scale, f in [
            (f"{TLS_CLIENTS:,} clients echoing (k trips/s)", "trips_per_s", 1e-3, None),
            ("server RSS per idle connection (KiB)", "rss_kib_per_conn", 1, lambda v: f"{v:.1f}"),
            (f"opening the {TLS_CLIENTS:,}, handshakes included (s)", "open_s", 1,
             lambda v: f"{v:.2f}")]:
        cells = []
        for key, _, prog, _ in TLS_SERVERS:
            v = [x[field] * scale for x in srv[key]]
            cells.append((med_range(v, f) if f else med_range(v)) if v else
                         why("tls:server", key, prog))
        srows.append(f"| {label_} | " + " | ".join(cells) + " |")
    plain_rate = [x["trips_per_s"] for x in srv["plain"]]
    cells = []
    for key, _, prog, _ in TLS_SERVERS:
        r = ratio([x["trips_per_s"] for x in srv[key]], plain_rate, True)
        cells.append(r or why("tls:server", key, prog) if key != "plain" else "1×")
    srows.append("| echo rate / plain, same repetition | " + " | ".join(cells) + " |")

    hs = tls["hs"]
    hrows = ["| client → server | connections/s | one connection, p50 (ms) | p99 (ms) | "
             "rate / OpenSSL → OpenSSL |", "|---|---:|---:|---:|---:|"]
    base = [x["conns_per_s"] for x in hs["raw"]]
    for key, label_, prog, _ in TLS_HS:
        v = hs[key]
        if not v:
            w = why("tls:hs", key, prog)
            hrows.append(f"| {label_} | {w} | {w} | {w} | — |")
            continue
        r = ratio([x["conns_per_s"] for x in v], base, True) or "—"
        hrows.append(f"| {label_} | {med_range([x['conns_per_s'] for x in v])} | "
                     f"{statistics.median(x['p50_ms'] for x in v):.2f} | "
                     f"{statistics.median(x['p99_ms'] for x in v):.2f} | {r} |")

    targets = ["| target | measured (median of per-repetition ratios) | met |", "|---|---:|---|"]
    for text, key, column, op, bound in TLS_TARGETS:
        mine, base = tls["table"][key][column], tls["table"][key][TLS_BASE]
        n = min(len(mine), len(base))
        if n == 0:
            targets.append(f"| {text} | not measured | — |")
            continue
        # the figures' own ratio: time for RTT, rate for one-way
        r = statistics.median(mine[i] / base[i] for i in range(n))
        met = r <= bound if op == "le" else r >= bound
        p50, p50_base = tls["p50"][key][column], tls["p50"][key][TLS_BASE]
        m = min(len(p50), len(p50_base))
        also = (f" (p50: {statistics.median(p50[i] / p50_base[i] for i in range(m)):.2f}×)"
                if m else "")
        targets.append(f"| {text} | {r:.2f}×{also} | {'yes' if met else 'NO'} |")
    neg = "; ".join(f"{p}: {' '.join(v)}" for p, v in sorted(tls["negotiated"].items())) or "—"
    return f"""## TLS (OpenSSL {version_of(["pkg-config", "--modversion", "openssl"])})

Negotiated, as each program reported its last connection: {neg}.
Medians (min–max over repetitions).

{chr(10).join(absolute)}

Speed relative to raw-tls in the same repetition (> 1 is faster); the last
column is sockmsg-tls relative to plain sockmsg (the main table's run in
the same repetition): what TLS costs the library.

{chr(10).join(rel)}

### {TLS_CLIENTS:,} clients: TLS against plain

{chr(10).join(srows)}

### Handshakes: {TLS_HS_COUNT[mode]:,} connections one after another

Each a full handshake (TLS 1.3, no resumption), one 64-byte echo, close.

{chr(10).join(hrows)}

### Targets (TLS with OpenSSL)

{chr(10).join(targets)}"""


def tls_notes(quick):
    """What the TLS section measures, precisely."""
    mode = "quick" if quick else "full"
    return f"""- TLS section.  Certificates: made once per run by
  `tests/tls/make-certs.sh` into a temporary directory that is removed at
  the end (a P-256 ECDSA server certificate for localhost and 127.0.0.1,
  signed by a CA made for the run); every client verifies the server
  against that CA and the address 127.0.0.1.  Both sides use OpenSSL's
  defaults for protocol, cipher suites and groups; the line under the
  section's heading shows what each program negotiated.
- raw-tls, the baseline of the TLS ratios: OpenSSL by hand, as a first
  program does it.  Blocking TCP sockets with TCP_NODELAY; one `SSL_CTX`
  per process with no modes or options set (so no
  `SSL_MODE_RELEASE_BUFFERS`); each message is an `SSL_write` of the 4-byte
  length, then one of the payload (two records); receiving, `SSL_read`s of
  exactly 4 bytes, then of the payload into a buffer grown to the largest
  message.  Its server for many clients is a one-thread epoll echo server
  with OpenSSL non-blocking on each socket (TCP_NODELAY): one `SSL_read` of
  up to 16 KiB (a record) per readiness, more while `SSL_pending`, the
  replies to one read in one `SSL_write`, a peer not read while its
  output waits.
- sockmsg-tls: the library with `sm_options.tls` (client: `ca_file`;
  listener: `cert_file`, `key_file`) for lat and thr, and `sm_server` with
  `sm_server_listen_tls` for the server and handshake rows.  sockmsg-tls-more
  is its stream fast path (`SM_MORE` + `sm_recv_view`); raw-tls has none.
  sockmsg-tls-keep is sockmsg-tls with `SSL_MODE_RELEASE_BUFFERS` cleared
  from the mode the library sets on its contexts (the bench program is
  linked with `-Wl,--wrap=SSL_CTX_ctrl`; the library itself is unchanged,
  and each run checks that the mode was seen and reports the mode of the
  session, `release_buffers=`): the difference is what the mode costs.
- {TLS_CLIENTS:,} clients: the same hand-written epoll clients as the main
  table's server rows ({TLS_ROUNDS[mode]} round trips each, one 64-byte
  message in flight per client, timed over all of them), over TLS with
  OpenSSL non-blocking in the same loop: each socket connected (blocking
  `connect`), then its handshake driven in the loop, at most 16 in flight
  at once; a request is one `SSL_write` of the whole 68-byte frame.  The
  plain cell is `sm_server` with a plain listener and the plain clients.
  RSS per idle connection: the server's RSS growth from before the first
  connection to when all {TLS_CLIENTS:,} are idle after one echo each,
  divided by {TLS_CLIENTS:,}; it includes what the heap keeps of the
  handshakes, which is why the clients pace them (all {TLS_CLIENTS:,} at
  once left `sm_server` at 29 KiB per connection instead of 15 when
  measured on 2026-12-02).  The client process does as much cryptography
  as the server, so with few cores the TLS echo rates are the pair's.
- Handshakes: one client opens {TLS_HS_COUNT[mode]:,} connections one after
  another (the first 10 not counted) to the transport's echo server; each
  does a full TLS 1.3 handshake (no session is ever reused), one 64-byte
  echo, and is closed (close_notify, not waited for) before the next.
  The sockmsg-tls client is `sm_connect_opts` with `sm_options.tls`, which
  makes a new OpenSSL context for every connection (reading the CA file
  each time); the OpenSSL client keeps one context.  The plain row is the
  same loop without TLS (`sm_connect`, against `sm_server`)."""


def chart(results, path, date):
    """Grouped bars of speed relative to raw-buffered, log scale."""
    names = [c for c, _, _ in COLUMNS if any(results[r[0]][c] for r in ROWS)]
    data = os.path.splitext(path)[0] + ".dat"
    with open(data, "w") as f:
        for row in ROWS:
            if row[0] == "conns":
                continue
            vals = []
            for name in names:
                r = speed_ratios(row, results, name, BASE)
                vals.append(f"{statistics.median(r):.4f}" if r else "NaN")
            f.write('"' + label(row, False) + '" ' + " ".join(vals) + "\n")
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


def notes(quick):
    """What each column is, precisely: the text of the results file."""
    n = f"{row_size(next(r for r in ROWS if r[0] == 'connect'), quick):,}"
    links, rounds = LINKS["quick" if quick else "full"]
    pause, times = RECONNECT["quick" if quick else "full"]
    return f"""- Every message is checked (sequence number in each, whole payload on a
  sample and on the last); a mismatch fails the run.  Client and server are
  separate processes on 127.0.0.1; messages are framed with a 4-byte
  big-endian length in every transport but ZeroMQ and nng.
- sockmsg is the plain API (`sm_send`, `sm_recv` into a buffer);
  sockmsg-more is the fast path for streams (`SM_MORE` + `sm_recv_view`).
- raw-naive: blocking sockets, TCP_NODELAY; one `writev` (header +
  payload) per message, nothing coalesced; receiving, `read` the 4-byte
  header, then the payload into a buffer grown to the largest message.
  No server for many clients (n/a).
- raw-buffered, the baseline of every ratio: blocking sockets,
  TCP_NODELAY; sends coalesced in a 64 KiB buffer (a frame that does not
  fit goes out in one `writev` with what is buffered; a send without
  "more" writes at once); receives fill a 256 KiB buffer by `read`s of up
  to 128 KiB and parse frames in place (the unread part of a frame moves
  to the front when less than 128 KiB of room is left); a frame over
  256 KiB gets a buffer of its size, each `read` asking for all the frame
  still needs.  Its server is a one-thread epoll echo server (level-
  triggered, `recv` of up to 128 KiB, the replies to one read sent
  together).
- raw-buffered-64k: raw-buffered as it was up to 2026-11-25, kept for
  comparison: the same sends; a 64 KiB receive buffer, each `read` asking
  for all its free room, the unread part of a frame moved to the front only
  when the frame would not fit; its server reads 64 KiB at a time.
- Server rows: the raw epoll servers, ZeroMQ's ROUTER/DEALER and
  `sm_server`; the raw servers and `sm_server` are driven by the same
  hand-written epoll clients.  nng cannot address one connection of many:
  no server workload (n/a).  ZeroMQ's client side holds two descriptors per
  socket, so its RSS row uses 5,000 clients.
- Connection row ({n} connections opened at once, one echo each): both
  clients talk to one server, `sm_server` (bench-sockmsg's echo server, in
  its own process).  raw-buffered there is the hand-written client: every
  socket non-blocking, `connect()` started on all {n}, each registered with
  epoll for EPOLLOUT; when writable it sends one 64-byte message (`send`
  reports a failed connect, so no `getsockopt(SO_ERROR)`), switches to
  EPOLLIN and reads the echo; no TCP_NODELAY.  sockmsg is the library's
  non-blocking API in the same loop: `sm_connect_opts` with
  `nonblocking = 1` for all {n}, EPOLLOUT; when writable,
  `sm_conn_connected` then `sm_send`; then `sm_recv` on the events
  `sm_conn_events` names.  Timed from the first socket to the last echo
  (each checked whole); closing is not timed.  Other columns: n/a.
- Dialled links (sockmsg only; no other transport's server dials):
  echo over {links:,} links, dialled against accepted.  Both sides are
  `sm_server`s in separate processes, with the same handlers whichever
  side made a link.  The measuring one (bench-sockmsg) keeps one 64-byte
  message in flight per link, sending the next from `on_message` when the
  echo comes (each checked whole), and is timed over {rounds} round trips
  on every link after one untimed one; the other echoes every message
  (`sm_server_send` from `on_message`).  Dialled: the measuring server
  dials every link with `sm_server_connect` (default options) to the echo
  server's listener, which accepts them.  Accepted: the measuring server
  listens and accepts; the echo server makes the links with blocking
  `connect()` and serves each with `sm_server_adopt`, which the library
  handles as an accepted connection.  So the echo server's side is an
  accepted connection either way and only the measuring side's links
  differ.  Both are run in every repetition, the order alternating; the
  ratio is dialled over accepted in the same repetition.  (The same echo
  server driven by hand-written epoll clients is the sockmsg cell of the
  1,000 clients row.)  The "links up"
  time runs from the first `sm_server_connect` to the last `on_open`.
- Reconnect (sockmsg only): one link dialled by `sm_server_connect` with
  the default backoff (100 ms doubling to 5 s, each wait a random part
  between half and all of the interval) to an echo server in a child.
  {times} times per repetition: the child is killed (SIGKILL, by pid); once
  `on_close` reports the drop, an echo request is queued on the link
  (`sm_server_send` while it is down); {pause:,} ms after the kill a new
  child listens on the same port and reports when `sm_server_listen`
  returned (CLOCK_MONOTONIC, which both processes share).  Reconnect time:
  from then to the queued request's echo arriving in `on_message`.  The
  wait current then is the `delay_ms` of the last `on_retry` before the
  link came up (the wait whose end started the try that connected); it is
  at most the backoff interval, so "reconnect ≤ wait + 10 ms" is the
  stricter form of the target.  (The first wait after a drop has no
  `on_retry`, which reports failed tries only: the pause is long enough
  for at least one failed try, and a restart without one fails the run.)
  "Scheduled time → echo" is the echo's
  arrival after that `on_retry` plus its `delay_ms`: the library's own
  part (timer lateness, the connect, the queued send, the echo), to about
  1 ms, as the library's timers count whole milliseconds."""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    every = " ".join(dict.fromkeys([p for _, p, _ in COLUMNS] + list(TLS_PROGRAMS) +
                                   list(inloop.PROGRAMS)))
    ap.add_argument("--transports", default=every, help="the programs to run")
    ap.add_argument("--available", default=every,
                    help="the programs this machine can build (else: not installed)")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS", 5)))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--chart", default="docs/bench-ratios.png")
    args = ap.parse_args()

    built = {p for p in every.split()
             if os.path.exists(os.path.join(args.build, "bench", "bench-" + p))}
    progs = (set(args.transports.split()) & built, set(args.available.split()))
    reps = 1 if args.quick else max(args.reps, 3)
    date = datetime.date.today().isoformat()
    start = datetime.datetime.now()
    # The TLS transports' certificates: made for this run, removed after it.
    tls_dir = None
    if any(p in progs[0] for p in TLS_PROGRAMS):
        tls_dir = tempfile.mkdtemp(prefix="sockmsg-bench-tls.")
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "tests", "tls", "make-certs.sh")
        os.environ["BENCH_TLS_DIR"] = tls_dir
    try:
        if tls_dir:
            subprocess.run(["sh", script, tls_dir], check=True, timeout=120)
        results, status, peers, tls = collect(args.build, progs[0], reps, args.quick,
                                              lambda s: print(s, flush=True))
    except (OSError, subprocess.SubprocessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
    absolute, ratios = tables(results, status, progs, args.quick)
    if any(p in progs[0] for p in TLS_PROGRAMS):
        tls_text = tls_section(tls, results, status, progs, args.quick) + \
            "\n\nNotes on the TLS section:\n\n" + tls_notes(args.quick)
    else:
        tls_text = "## TLS (OpenSSL)\n\n" + (
            "not run (BENCH_ONLY left out raw-tls and sockmsg-tls)"
            if any(p in progs[1] for p in TLS_PROGRAMS)
            else "not installed (the library was built without OpenSSL)")
    minutes = (datetime.datetime.now() - start).total_seconds() / 60
    zmq = version_of(["pkg-config", "--modversion", "libzmq"])
    nng = version_of(["dpkg-query", "-W", "-f", "${Version}", "libnng-dev"])
    cmd = "make bench" + (" QUICK=1" if args.quick else "")
    text = f"""# Benchmark results, {date}{' (QUICK smoke run)' if args.quick else ''}

- Machine: {machine()}; unpinned, other load not controlled.
- Command: `{cmd}` ({reps} repetitions, transports interleaved in each; {minutes:.1f} min).
- Baselines: ZeroMQ {zmq}, nng {nng}.
{notes(args.quick)}

## Medians (min–max over repetitions)

{absolute}

## Speed relative to raw-buffered, in the same repetition (> 1 is faster)

Median of the per-repetition ratios; for times (round trips, connections)
the ratio is raw-buffered's time over the transport's.  In the connection
row raw-buffered is the hand-written epoll client, against the same server.

{ratios}

## Targets (issue 5)

Ratios of the figures themselves (times for RTT, rates otherwise), per
repetition against the best named competitor, median over repetitions.

{target_table(results, args.quick)}

{peers_section(peers, status, progs, args.quick)}

{inloop.section(status, progs, args.quick)}

{tls_text}
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
    if not args.quick and any(results[r[0]][BASE] for r in ROWS) and \
            chart(results, args.chart, date):
        print(f"chart written to {args.chart}")
    failed = [k for k, v in status.items() if v in ("failed", "timed out")]
    if failed:
        print(f"FAILED runs: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

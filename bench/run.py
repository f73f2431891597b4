#!/usr/bin/env python3
"""Runs every workload for every transport, interleaved, and reports medians.

Each repetition runs every row for every transport in turn, so slow phases
of a noisy machine hit all transports alike; ratios to raw-buffered (the
strong hand-written baseline) are taken within one repetition, then the
median of those ratios is reported.
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


def collect(build, programs, reps, quick, log):
    """results[row][column] = list of per-repetition figures; status[(row,
    column)] = why a cell has none; peers: the dialled-link runs
    (collect_peers).  programs: those built and selected."""
    results = {row[0]: {c: [] for c, _, _ in COLUMNS} for row in ROWS}
    status = {}
    peers = {"links": [], "reconnect": []}
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
        if "sockmsg" in programs:
            collect_peers(build, rep, reps, quick, peers, status, log)
    return results, status, peers


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
    every = " ".join(dict.fromkeys(p for _, p, _ in COLUMNS))
    ap.add_argument("--transports", default=every, help="the programs to run")
    ap.add_argument("--available", default=every,
                    help="the programs this machine can build (else: not installed)")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS", 5)))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--chart", default="docs/bench-ratios.png")
    args = ap.parse_args()

    built = {p for _, p, _ in COLUMNS
             if os.path.exists(os.path.join(args.build, "bench", "bench-" + p))}
    progs = (set(args.transports.split()) & built, set(args.available.split()))
    reps = 1 if args.quick else max(args.reps, 3)
    date = datetime.date.today().isoformat()
    start = datetime.datetime.now()
    results, status, peers = collect(args.build, progs[0], reps, args.quick,
                                     lambda s: print(s, flush=True))
    absolute, ratios = tables(results, status, progs, args.quick)
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

"""run.py's section "Inside someone else's event loop": the library driven
by the application's loop against the same work in the library's own.

  sockmsg-nb against sockmsg: one connection, the non-blocking API in a
    poll() loop against the blocking calls (lat and thr);
  sockmsg-uv against sockmsg: the echo server, sm_server attached to a
    libuv loop (sm_uv_attach, uv_run) against sm_server_run, with the same
    hand-written epoll clients (the server workload).

Each pair runs back to back in every repetition, the order alternating,
and its ratio is taken within the repetition.  collect() keeps the figures
in FIGURES; section() turns them into Markdown, notes included.
"""
import os
import statistics

PROGRAMS = ("sockmsg-nb", "sockmsg-uv")
BLOCKING = "sockmsg"
# (key, label, workload, size, figure, unit, higher_is_better, count,
#  program): each against bench-sockmsg with the same arguments.  Counts
# as the main table's sockmsg cells (about a second each here); QUICK
# divides the lat and thr counts by 20 and runs 10 server rounds.  For
# the server row, size is the number of clients and count the rounds.
ROWS = [
    ("lat64", "RTT 64 B, mean", "lat", 64, "mean_us", "µs", False, 20000, "sockmsg-nb"),
    ("thr64", "64 B one-way", "thr", 64, "msgs_per_s", "M msg/s", True, 1000000, "sockmsg-nb"),
    ("thr1m", "1 MiB one-way", "thr", 1048576, "mb_per_s", "GB/s", True, 1000, "sockmsg-nb"),
    ("srv1k", "1,000 clients echoing", "server", 1000, "trips_per_s", "k trips/s", True, 100,
     "sockmsg-uv"),
]
SCALE = {"µs": 1, "M msg/s": 1e-6, "GB/s": 1e-3, "k trips/s": 1e-3}
TARGETS = [
    # (text, row, "le"/"ge", bound): the figures' own ratio, embedded over
    # blocking (time for RTT, rate otherwise), median over repetitions
    ("RTT 64 B, mean: non-blocking (sockmsg-nb) ≤ 1.05× blocking", "lat64", "le", 1.05),
    ("1,000 clients: `sm_server` in libuv (sockmsg-uv) ≥ 0.9× `sm_server_run`", "srv1k",
     "ge", 0.9),
]
WHY = {"failed": "FAILED", "timed out": "TIMED OUT", "unsupported": "n/a"}

# FIGURES[key]: one {"sockmsg": fields, program: fields} per repetition in
# which both ran (fields: the program's output line, as floats).
FIGURES = {row[0]: [] for row in ROWS}


def args_of(row, quick):
    key, _, workload, size, _, _, _, count, _ = row
    if workload == "server":
        return ["server", str(size), str(min(count, 10) if quick else count)]
    return [workload, str(size), str(max(count // 20, 100) if quick else count)]


def collect(run_one, build, programs, rep, reps, quick, status, log):
    """One repetition: every row whose two programs are selected and built.
    run_one: run.py's; status: its dict, keyed ("inloop:" + row, program)."""
    for row in ROWS:
        key, figure, prog = row[0], row[4], row[8]
        pair = (BLOCKING, prog) if rep % 2 == 0 else (prog, BLOCKING)
        if not all(p in programs for p in pair) or \
                any(status.get(("inloop:" + key, p)) for p in pair):
            continue
        got = {}
        for p in pair:
            st, f = run_one(os.path.join(build, "bench", "bench-" + p), args_of(row, quick), 300)
            log(f"rep {rep + 1}/{reps} inloop {key:6} {p:13} {st} {f.get(figure, '')}")
            if st != "ok":
                status[("inloop:" + key, p)] = st
                break
            got[p] = {k: float(v) for k, v in f.items() if k not in ("transport", "workload")}
        if len(got) == 2:
            FIGURES[key].append(got)


def fmt(v, unit):
    v *= SCALE[unit]
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def med_range(values, f):
    med = f(statistics.median(values))
    return med + (f" ({f(min(values))}–{f(max(values))})" if len(values) > 1 else "")


def ratios(key, figure, prog):
    """Per-repetition ratios of the figures, prog's over sockmsg's."""
    return [r[prog][figure] / r[BLOCKING][figure] for r in FIGURES[key]
            if r[BLOCKING][figure] > 0]


def section(status, progs, quick):
    """The section as Markdown.  progs: (selected and built, available)."""

    def why(key, prog):
        for p in (BLOCKING, prog):
            st = status.get(("inloop:" + key, p))
            if st:
                return f"{WHY[st]} ({p})"
        for p in (BLOCKING, prog):
            if p not in progs[1]:
                return "not installed" + (" (libuv: make deps)" if p == "sockmsg-uv" else "")
        return "not run (BENCH_ONLY)" if any(p not in progs[0] for p in (BLOCKING, prog)) \
            else "—"

    rows = ["| | program | sockmsg | that program | ratio |", "|---|---|---:|---:|---:|"]
    for row in ROWS:
        key, text, _, _, figure, unit, _, _, prog = row
        label = f"{text} ({unit})"
        reps = FIGURES[key]
        if not reps:
            w = why(key, prog)
            rows.append(f"| {label} | {prog} | {w} | {w} | — |")
            continue
        mine = med_range([r[BLOCKING][figure] for r in reps], lambda v: fmt(v, unit))
        theirs = med_range([r[prog][figure] for r in reps], lambda v: fmt(v, unit))
        ratio = med_range(ratios(key, figure, prog), lambda v: f"{v:.2f}×")
        rows.append(f"| {label} | {prog} | {mine} | {theirs} | {ratio} |")
        if figure == "mean_us":
            p50 = [r[p]["p50_us"] for r in reps for p in (BLOCKING, prog)]
            rows.append(f"| {text.replace('mean', 'p50')} ({unit}) | {prog} | "
                        f"{med_range(p50[0::2], lambda v: fmt(v, unit))} | "
                        f"{med_range(p50[1::2], lambda v: fmt(v, unit))} | "
                        f"{med_range(ratios(key, 'p50_us', prog), lambda v: f'{v:.2f}×')} |")

    targets = ["| target | measured (median of per-repetition ratios) | met |",
               "|---|---:|---|"]
    for text, key, op, bound in TARGETS:
        row = next(r for r in ROWS if r[0] == key)
        r = ratios(key, row[4], row[8])
        if not r:
            targets.append(f"| {text} | not measured: {why(key, row[8])} | — |")
            continue
        med = statistics.median(r)
        met = med <= bound if op == "le" else med >= bound
        also = ""
        if row[4] == "mean_us":
            also = f" (p50: {statistics.median(ratios(key, 'p50_us', row[8])):.2f}×)"
        targets.append(f"| {text} | {med:.2f}×{also} | {'yes' if met else 'NO'} |")

    n = len(next((v for v in FIGURES.values() if v), []))
    lat, thr64, thr1m, srv = (f"{int(args_of(r, quick)[2]):,}" for r in ROWS)
    both = f" ({n} repetition{'s' if n != 1 else ''} with both)" if n else ""
    return f"""## Inside someone else's event loop

The library driven by the application's own loop, against the same work
in the library's own waits: sockmsg-nb is one connection with the
non-blocking API in a `poll()` loop, sockmsg-uv is the echo server
attached to a libuv loop; "sockmsg" is bench-sockmsg with the same
arguments.  Each pair runs back to back in every repetition, the order
alternating{both}.  Ratio: the figures' own, that program's over
sockmsg's, in the same repetition (for RTT a time: > 1 is slower;
otherwise a rate: < 1 is slower); medians (min–max) over repetitions.

{chr(10).join(rows)}

{chr(10).join(targets)}

Notes on this section:

- sockmsg-nb (bench/transport-sockmsg-nb.c): `sm_options.nonblocking = 1`
  on both ends, the client's from `sm_connect_opts`, the server's from
  `sm_listen_opts` (an accepted connection has its listener's options;
  `sm_accept` is retried on `SM_EAGAIN` after `poll()` on
  `sm_listener_fd`); the connect is finished by `sm_conn_connected` once
  `poll()` reports the socket writable.  Receiving, as the loop in
  sockmsg.h: `sm_recv` is called until it returns a message; on
  `SM_EAGAIN`, `poll()` on `sm_conn_fd` for the events `sm_conn_events`
  names (POLLIN, and POLLOUT while anything is held), `sm_flush` when
  POLLOUT came, then `sm_recv` again.  So each message that is not
  already there costs a receive that returns `SM_EAGAIN`, a `poll()`
  and the receive that returns it, where the blocking call sleeps in one
  `recv`.  Sending: `sm_send`; on `SM_EAGAIN` (more than the library
  holds), `poll()` for POLLOUT, `sm_flush`, and the send again; a send
  after which something is held waits the same way until nothing is
  (the harness's promise that a message without "more" is on the
  wire).  Same workloads, checks and counts as sockmsg: RTT {lat} round
  trips after 1,000 untimed ones; one-way {thr64} (64 B) and {thr1m}
  (1 MiB) messages, then an acknowledgement.
- sockmsg-uv (bench/transport-sockmsg-uv.c): bench-sockmsg's echo server
  (`sm_server`, `on_message` sends each message back with
  `sm_server_send`) attached to a `uv_loop_t` with `sm_uv_attach`
  (include/sockmsg/adapters/libuv.h: a `uv_poll_t` on `sm_server_fd`
  and a `uv_timer_t` for `sm_server_timeout`, each calling
  `sm_server_run_once(s, 0)`) and run by `uv_run` instead of
  `sm_server_run`; SIGTERM calls `sm_server_stop`.  Clients: the
  hand-written epoll clients of the main table's server rows, {srv} round
  trips each, one 64-byte message in flight per client, timed over all.
  Built when `pkg-config --exists libuv` (libuv1-dev, `make deps`)."""

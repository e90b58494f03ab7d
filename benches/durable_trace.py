#!/usr/bin/env python3
"""Where the time of a durable save goes when processes share flushes.

Runs `sessionlog bench --durable-processes N --durable-rounds 1` under
`perf record` (syscall tracepoints of pwritev2 and futex, system-wide;
needs root or perf_event_paranoid <= -1) for each count in turn, ROUNDS
times, and prints for each run, from the store's processes only (the
bench's raw rows run after them, in processes of their own):

- saves/s: records flushed per second (every durable save is one record);
- per flush: records each `pwritev2(RWF_DSYNC)` carried;
- flush: median time inside one such flush;
- gap: mean time from the end of one flush to the start of the next;
- wake: median time from the flush turn's `FUTEX_WAKE` to a woken
  waiter's return from `FUTEX_WAIT`; last: the median, over wake-ups, of
  the slowest waiter it woke;
- bound: what N processes could reach, as a multiple of one process in
  the round, if every flush carried all N saves and the next flush began
  the moment the last woken waiter had appended:
  N * (flush_1 + gap_1) / (flush_N + last_N + gap_1), where gap_1 (one
  process's gap) is the cost of a save outside its flush.

    sudo python3 benches/durable_trace.py [--counts 1,4] [--rounds 3]
        [--seconds 2] [--bin target/release/sessionlog] DIR

DIR holds the stores (fresh each run) and the trace files. With
`--flush-sizes`, it first times `pwritev2(RWF_DSYNC)` writes of one
record and of four, alternating, at the tail of a zeroed file in DIR: what
a flush carrying every process's save costs against one carrying one.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

EVENTS = ",".join(
    f"syscalls:sys_{e}_{s}" for s in ("pwritev2", "futex") for e in ("enter", "exit")
)
LINE = re.compile(r"\s*(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)")
OP = re.compile(r"uaddr: (0x[0-9a-f]+), op: (0x[0-9a-f]+)")
# Shared (not process-private) futex operations, as src/engine/lock.rs
# issues them.
FUTEX_WAIT, FUTEX_WAKE = 0, 1


def trace(args, n, out):
    """Runs one count under perf and returns the events of `perf script`."""
    data = os.path.join(out, f"durable-{n}.perf")
    subprocess.run(
        ["perf", "record", "-q", "-a", "-o", data, "-e", EVENTS, "--",
         args.bin, "bench", "--durable-processes", str(n),
         "--durable-seconds", str(args.seconds), "--durable-rounds", "1",
         os.path.join(out, "durable.db")],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = subprocess.run(
        ["perf", "script", "-i", data, "-F", "pid,time,event,trace"],
        check=True, capture_output=True, text=True).stdout
    return [m.groups() for m in map(LINE.match, text.splitlines()) if m]


def summarise(events, n, record_bytes):
    """The figures of one run, from the first `n` processes that flush."""
    flushers = []
    for pid, _, _, name, _ in events:
        if name == "pwritev2" and pid not in flushers:
            flushers.append(pid)
    store = set(flushers[:n])
    flushes, entered, futex, woken = [], {}, {}, {}
    # Wake-ups by the word's offset in its page: the lock page is mapped
    # at a different address in each process.
    last_wake = {}
    for pid, t, edge, name, rest in events:
        if pid not in store:
            continue
        t = float(t)
        if name == "pwritev2":
            if edge == "enter":
                entered[pid] = t
            elif pid in entered:
                flushes.append((entered.pop(pid), t, int(rest, 16)))
        elif edge == "enter":
            addr, op = (int(g, 16) for g in OP.search(rest).groups())
            word = addr & 0xFFF
            futex[pid] = (word, op, t)
            if op == FUTEX_WAKE:
                last_wake[word] = t
        elif pid in futex:
            word, op, t0 = futex.pop(pid)
            # The flush turn's waiters use plain FUTEX_WAIT (the write
            # lock's, glibc's robust mutex, wait with a bitset); count a
            # wait that a wake-up of its word ended after it began.
            wake = last_wake.get(word)
            if op == FUTEX_WAIT and wake is not None and wake > t0:
                woken.setdefault(wake, []).append(t - wake)
    flushes.sort()
    span = flushes[-1][1] - flushes[0][0]
    records = sum(b for _, _, b in flushes) / record_bytes
    waits = [w for ws in woken.values() for w in ws]
    return {
        "saves": records / span,
        "per_flush": records / len(flushes),
        "flush": statistics.median(e - s for s, e, _ in flushes) * 1e6,
        "gap": statistics.mean(
            flushes[i + 1][0] - flushes[i][1] for i in range(len(flushes) - 1)) * 1e6,
        "wake": statistics.median(waits) * 1e6 if waits else 0.0,
        "last": statistics.median(max(ws) for ws in woken.values()) * 1e6 if woken else 0.0,
    }


def flush_sizes(out, record_bytes, writes=6000):
    """Median µs of RWF_DSYNC writes of 1 and of 4 records, alternating."""
    path = os.path.join(out, "flush-sizes")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(4 * record_bytes * writes))
        os.fsync(fd)
        times, at = {1: [], 4: []}, 0
        for i in range(writes):
            k = 4 if i % 2 == 0 else 1
            data = b"\x5a" * (k * record_bytes)
            t = time.perf_counter_ns()
            os.pwritev(fd, [data], at, os.RWF_DSYNC)
            times[k].append(time.perf_counter_ns() - t)
            at += len(data)
    finally:
        os.close(fd)
        os.unlink(path)
    for k, v in times.items():
        print(f"RWF_DSYNC write of {k} record(s): median {statistics.median(v) / 1e3:.1f} µs")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=2)
    p.add_argument("--bin", default="target/release/sessionlog")
    p.add_argument("--record-bytes", type=int, default=1096,
                   help="bytes of one saved record (1,024 B of data, the bench's default)")
    p.add_argument("--flush-sizes", action="store_true")
    p.add_argument("dir")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if counts[0] != 1:
        sys.exit("--counts must start with 1 (the bound is against one process)")
    os.makedirs(args.dir, exist_ok=True)
    if args.flush_sizes:
        flush_sizes(args.dir, args.record_bytes)
    print("| round | processes | saves/s | × 1 | per flush | flush µs | gap µs "
          "| wake µs | last µs | bound × 1 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in range(1, args.rounds + 1):
        one = None
        for n in counts:
            s = summarise(trace(args, n, args.dir), n, args.record_bytes)
            if n == 1:
                one = s
            bound = n * (one["flush"] + one["gap"]) / (s["flush"] + s["last"] + one["gap"])
            print(f"| {r} | {n} | {s['saves']:.0f} | {s['saves'] / one['saves']:.2f}× "
                  f"| {s['per_flush']:.2f} | {s['flush']:.0f} | {s['gap']:.1f} "
                  f"| {s['wake']:.0f} | {s['last']:.0f} | {bound:.2f}× |", flush=True)


if __name__ == "__main__":
    main()

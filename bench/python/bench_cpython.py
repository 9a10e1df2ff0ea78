#!/usr/bin/env python3
"""CPython's multiprocessing on the multiproc benchmark workloads.

Prints one JSON object per workload:
    {"workload": "...", "unit": "us", "value": <median>, "reps": R, "per_rep": N, "python": "3.x.y"}

    python3 bench_cpython.py [--quick | --full] [--workload NAME ...]
"""

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time

MSG = b"pingpong"  # 8 bytes
VALUE = (42, 3.25, "hello")  # the Rust side's Small { id, x, tag }


def noop():
    pass


def echo_bytes(conn):
    while True:
        b = conn.recv_bytes()
        if not b:
            break
        conn.send_bytes(b)
    conn.close()


def echo_value(conn):
    while True:
        v = conn.recv()
        if v is None:
            break
        conn.send(v)
    conn.close()


def start_join(method, reps, per_rep):
    """Microseconds per start + join of a no-op process: the median of every sample."""
    ctx = multiprocessing.get_context(method)

    def once():
        t = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        dt = time.perf_counter() - t
        if p.exitcode != 0:
            raise RuntimeError(f"{method} child exit code {p.exitcode}")
        return dt * 1e6

    once()  # warm-up: the first forkserver start launches the server
    return statistics.median(once() for _ in range(reps * per_rep))


def pipe_rtt(echo, send, recv, message, stop, reps, per_rep):
    """Microseconds per round trip with a child echoing on a duplex Pipe: the median of the
    repetitions' means."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe(duplex=True)
    p = ctx.Process(target=echo, args=(there,))
    p.start()
    there.close()
    send_, recv_ = getattr(here, send), getattr(here, recv)
    for _ in range(per_rep // 10):
        send_(message)
        if recv_() != message:
            raise RuntimeError("echoed another message")
    means = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(per_rep):
            send_(message)
            recv_()
        means.append((time.perf_counter() - t) * 1e6 / per_rep)
    send_(stop)
    p.join()
    here.close()
    return statistics.median(means)


# name -> (quick (reps, per_rep), full (reps, per_rep), measure(reps, per_rep))
WORKLOADS = {
    "start_join_spawn": ((3, 4), (5, 10), lambda r, n: start_join("spawn", r, n)),
    "start_join_fork": ((3, 40), (5, 200), lambda r, n: start_join("fork", r, n)),
    "start_join_forkserver": ((3, 15), (5, 60), lambda r, n: start_join("forkserver", r, n)),
    "pipe_rtt_bytes": (
        (5, 5000),
        (9, 20000),
        lambda r, n: pipe_rtt(echo_bytes, "send_bytes", "recv_bytes", MSG, b"", r, n),
    ),
    "pipe_rtt_value": (
        (5, 5000),
        (9, 20000),
        lambda r, n: pipe_rtt(echo_value, "send", "recv", VALUE, None, r, n),
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="few repetitions")
    size.add_argument("--full", action="store_true", help="more repetitions (the default)")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="only these")
    args = parser.parse_args()
    for name in args.workload or list(WORKLOADS):
        quick, full, measure = WORKLOADS[name]
        reps, per_rep = quick if args.quick else full
        value = measure(reps, per_rep)
        print(
            json.dumps(
                {
                    "workload": name,
                    "unit": "us",
                    "value": round(value, 3),
                    "reps": reps,
                    "per_rep": per_rep,
                    "python": platform.python_version(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""CPython's multiprocessing on the multiproc benchmark workloads.

Prints one JSON object per workload:
    {"workload": "...", "unit": "us", "value": <median>, "reps": R, "per_rep": N, "python": "3.x.y"}

The unit is that of the harness's table: "us" (microseconds per operation), "ns"
(nanoseconds per operation), "s" (seconds per run), "GB/s", "MB/s", "msgs/s" or "x" (a
speedup factor).

    python3 bench_cpython.py [--quick | --full] [--workload NAME ...]
"""

import argparse
import array
import ctypes
import json
import multiprocessing
import platform
import statistics
import sys
import time
from multiprocessing import resource_tracker, shared_memory

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


def start_echo(echo, send, recv):
    """A forked child running `echo` on a duplex Pipe: the process, the parent's end, and
    that end's `send` and `recv` methods of the given names."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe(duplex=True)
    p = ctx.Process(target=echo, args=(there,))
    p.start()
    there.close()
    return p, here, getattr(here, send), getattr(here, recv)


def pipe_rtt(echo, send, recv, message, stop, reps, per_rep):
    """Microseconds per round trip with a child echoing on a duplex Pipe: the median of the
    repetitions' means."""
    p, here, send_, recv_ = start_echo(echo, send, recv)
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


def lock_uncontended(reps, per_rep):
    """Nanoseconds per acquire() + release() of a free multiprocessing.Lock: the median of
    the repetitions' means."""
    lock = multiprocessing.Lock()
    acquire, release = lock.acquire, lock.release
    for _ in range(per_rep // 10):
        acquire()
        release()
    means = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(per_rep):
            acquire()
            release()
        means.append((time.perf_counter() - t) * 1e9 / per_rep)
    return statistics.median(means)


def add_locked(v, n, gate):
    gate.wait(60)
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_contended(reps, per_proc):
    """Seconds for 2 processes x per_proc increments of a Value('i', 0) under get_lock(),
    from the parent's arrival, last, at a Barrier that both processes wait at, to the last
    join; the final count is checked every time."""
    ctx = multiprocessing.get_context("fork")
    times = []
    for _ in range(reps):
        v = ctx.Value("i", 0)
        gate = ctx.Barrier(3)
        ps = [ctx.Process(target=add_locked, args=(v, per_proc, gate)) for _ in range(2)]
        for p in ps:
            p.start()
        deadline = time.monotonic() + 10
        while gate.n_waiting < 2:  # arrive last: the clock starts before the children go
            if time.monotonic() > deadline:
                raise RuntimeError("the incrementing children do not reach the start gate")
            time.sleep(0.0001)
        t = time.perf_counter()
        gate.wait(10)
        for p in ps:
            p.join()
        times.append(time.perf_counter() - t)
        if any(p.exitcode != 0 for p in ps):
            raise RuntimeError(f"incrementing child exit codes {[p.exitcode for p in ps]}")
        if v.value != 2 * per_proc:
            raise RuntimeError(f"!!! value_contended: counted {v.value}, expected {2 * per_proc} !!!")
    return statistics.median(times)


def answer(ping, pong, stop):
    while True:
        if not ping.wait(60):
            return
        ping.clear()
        if stop.is_set():
            return
        pong.set()


def event_pingpong(reps, per_rep):
    """Microseconds per round trip of two processes alternating on two Events: the median
    of the repetitions' means."""
    ctx = multiprocessing.get_context("fork")
    ping, pong, stop = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=answer, args=(ping, pong, stop))
    p.start()

    def round_trips(n):
        for _ in range(n):
            ping.set()
            if not pong.wait(10):
                raise RuntimeError("the Event ping-pong child does not answer")
            pong.clear()

    round_trips(per_rep // 10)
    means = []
    for _ in range(reps):
        t = time.perf_counter()
        round_trips(per_rep)
        means.append((time.perf_counter() - t) * 1e6 / per_rep)
    stop.set()
    ping.set()
    p.join()
    return statistics.median(means)


def pattern_block(size):
    """`size` bytes where byte i is i % 251, as the Rust side writes."""
    block = bytes(i % 251 for i in range(251 * 64))
    return (block * (size // len(block) + 1))[:size]


def shm_writer(conn, size):
    shm = shared_memory.SharedMemory(create=True, size=size)
    shm.buf[:size] = pattern_block(size)
    conn.send(shm.name)
    conn.recv()
    shm.close()
    shm.unlink()


def shm_bandwidth(reps, size):
    """GB/s of attaching a SharedMemory a child created and wrote, and copying it into a
    warm bytearray (attach + copy timed): the median of the repetitions."""
    ctx = multiprocessing.get_context("fork")
    # One resource tracker for the parent and the forked writers: attaching registers the
    # segment again (before 3.13), which is then the same entry the creator's unlink removes.
    resource_tracker.ensure_running()
    # Written, so that every page is mapped before timing, and page-aligned as on the Rust
    # side: memcpy here is about 3x slower when the destination's offset in its page
    # differs from the source's (a segment starts at a page).
    buf = bytearray(b"\x01") * (size + 4096)
    anchor = ctypes.c_char.from_buffer(buf)
    start = (-ctypes.addressof(anchor)) % 4096
    del anchor
    view = memoryview(buf)[start : start + size]
    rates = []
    for _ in range(reps):
        here, there = ctx.Pipe()
        p = ctx.Process(target=shm_writer, args=(there, size))
        p.start()
        there.close()
        name = here.recv()
        t = time.perf_counter()
        shm = shared_memory.SharedMemory(name=name)
        view[:] = shm.buf[:size]
        dt = time.perf_counter() - t
        shm.close()
        for i in list(range(0, size, 4096)) + [size - 1]:
            if view[i] != i % 251:
                raise RuntimeError(f"byte {i} of the copy is {view[i]}, not {i % 251}")
        here.send(True)
        p.join()
        here.close()
        if p.exitcode != 0:
            raise RuntimeError(f"writing child exit code {p.exitcode}")
        rates.append(size / dt / 1e9)
    return statistics.median(rates)


LARGE = 64 << 20  # bytes of every large message


def large_bytes():
    """LARGE bytes where byte i is i % 251, as the Rust side sends."""
    return pattern_block(LARGE)


def large_floats():
    """An array('d') of LARGE // 8 distinct doubles, as the Rust side's Vec<f64>."""
    return array.array("d", (i * 0.5 for i in range(LARGE // 8)))


def check_large(got, sent):
    if len(got) != len(sent) or any(got[i] != sent[i] for i in range(0, len(sent), 4096)):
        raise RuntimeError("the child delivered another message")


def pipe_large(echo, send, recv, message, stop, reps):
    """GB/s one way of a round trip of a large message with a child echoing on a duplex
    Pipe (the message's size over half the round trip): the median of the repetitions."""
    p, here, send_, recv_ = start_echo(echo, send, recv)
    size = len(message) * message.itemsize if isinstance(message, array.array) else len(message)
    send_(message)
    check_large(recv_(), message)  # warm-up
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        send_(message)
        got = recv_()
        dt = time.perf_counter() - t
        check_large(got, message)
        rates.append(size / (dt / 2) / 1e9)
    send_(stop)
    p.join()
    here.close()
    return statistics.median(rates)


def send_large(conn):
    data = large_bytes()
    conn.send(time.monotonic_ns())
    conn.send_bytes(data)
    conn.close()


def spawn_result_large(reps):
    """GB/s of a forked child handing 64 MiB of bytes back to its parent, from the child's
    send (a reading of the monotonic clock, which every process shares, sent just before)
    to the bytes in hand and the child joined: the child sends them with send_bytes on a
    Pipe, the parent takes them with recv_bytes (multiprocessing has no process result;
    this is the fastest path a Process offers). The median of the repetitions."""
    ctx = multiprocessing.get_context("fork")
    expected = large_bytes()
    rates = []
    for i in range(reps + 1):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=send_large, args=(there,))
        p.start()
        there.close()
        sent = here.recv()
        got = here.recv_bytes()
        p.join()
        dt = (time.monotonic_ns() - sent) / 1e9
        here.close()
        if p.exitcode != 0:
            raise RuntimeError(f"sending child exit code {p.exitcode}")
        check_large(got, expected)
        if i > 0:  # the first one is a warm-up
            rates.append(LARGE / dt / 1e9)
    return statistics.median(rates)


def produce(q, first, n):
    put = q.put
    for i in range(first, first + n):
        put(i)


def queue_small(producers, reps, per_rep):
    """Messages per second through a multiprocessing.Queue from `producers` forked
    processes (per_rep // producers integers each, in order) to the parent: the items after
    the first over the time from the first item received to the last. The parent checks
    that each producer's items come in order. The median of the repetitions."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    each = per_rep // producers

    def once(each):
        total = each * producers
        ps = [ctx.Process(target=produce, args=(q, k * each, each)) for k in range(producers)]
        for p in ps:
            p.start()
        get = q.get
        expected = [k * each for k in range(producers)]

        def check(v):
            k = v // each
            if v != expected[k]:
                raise RuntimeError(f"got {v}, expected {expected[k]} from producer {k}")
            expected[k] += 1

        check(get(timeout=60))
        t = time.perf_counter()
        for _ in range(total - 1):
            check(get())
        dt = time.perf_counter() - t
        for p in ps:
            p.join()
        if any(p.exitcode != 0 for p in ps):
            raise RuntimeError(f"producer exit codes {[p.exitcode for p in ps]}")
        return (total - 1) / dt

    once(max(each // 10, 1))  # warm-up
    return statistics.median(once(each) for _ in range(reps))


MIB = 1 << 20
LARGE_VARIANTS = 8  # distinct items a large producer cycles through


def produce_large(q, items, n):
    put = q.put
    for i in range(n):
        put(items[i % len(items)])


def queue_large(reps, n):
    """MB/s (10**6 bytes per second) of 1 MiB bytes items through a multiprocessing.Queue
    from a forked producer to the parent: the bytes of the items after the first over the
    time from the first item received to the last. Item i's first byte is i % 8 (the
    producer cycles through 8 prebuilt items) and the others follow the pattern of the large
    workloads; the parent checks the length and the first and last bytes. The median of
    the repetitions."""
    ctx = multiprocessing.get_context("fork")
    body = pattern_block(MIB)
    items = [bytes([k]) + body[1:] for k in range(LARGE_VARIANTS)]
    q = ctx.Queue()

    def check(i, v):
        if len(v) != MIB or v[0] != i % LARGE_VARIANTS or v[-1] != body[-1]:
            raise RuntimeError(f"item {i} is another message")

    def once(n):
        p = ctx.Process(target=produce_large, args=(q, items, n))
        p.start()
        check(0, q.get(timeout=60))
        t = time.perf_counter()
        for i in range(1, n):
            check(i, q.get())
        dt = time.perf_counter() - t
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"producer exit code {p.exitcode}")
        return (n - 1) * MIB / dt / 1e6

    once(max(n // 10, 2))  # warm-up
    return statistics.median(once(n) for _ in range(reps))


def do_tasks(q):
    while True:
        v = q.get()
        q.task_done()
        if v is None:
            break


def joinable_roundtrip(reps, per_rep):
    """Microseconds per round trip through a JoinableQueue: the parent puts an integer and
    joins; a forked child gets it and calls task_done. The median of the repetitions'
    means."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.JoinableQueue()
    p = ctx.Process(target=do_tasks, args=(q,))
    p.start()
    put, join = q.put, q.join

    def round_trips(n):
        for i in range(n):
            put(i)
            join()

    round_trips(per_rep // 10)
    means = []
    for _ in range(reps):
        t = time.perf_counter()
        round_trips(per_rep)
        means.append((time.perf_counter() - t) * 1e6 / per_rep)
    put(None)
    join()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"task child exit code {p.exitcode}")
    return statistics.median(means)


def identity(x):
    return x


def pool_map(reps, n, chunksize):
    """Microseconds per item of pool.map(identity, range(n), chunksize) on a forked Pool of
    2 workers started before timing (chunksize None: the default, four chunks per worker),
    the results checked: the median of the repetitions."""
    ctx = multiprocessing.get_context("fork")
    expected = list(range(n))
    with ctx.Pool(2) as pool:
        pool.map(identity, range(n // 10), chunksize)  # warm-up
        means = []
        for _ in range(reps):
            t = time.perf_counter()
            got = pool.map(identity, range(n), chunksize)
            means.append((time.perf_counter() - t) * 1e6 / n)
            if got != expected:
                raise RuntimeError("the pool gave back other results")
    return statistics.median(means)


def pool_apply_async(reps, n):
    """Microseconds per task of n pool.apply_async(identity, (i,), callback=...) on a
    forked Pool of 2 workers, the callback counting completions in the parent, then every
    result waited for with get() and checked, and the count too: the median of the
    repetitions."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:

        def once(m):
            done = [0]
            errors = []

            def count(_):
                done[0] += 1

            t = time.perf_counter()
            pending = [
                pool.apply_async(identity, (i,), callback=count, error_callback=errors.append)
                for i in range(m)
            ]
            for i, r in enumerate(pending):
                if r.get(timeout=120) != i:
                    raise RuntimeError(f"task {i} gave back another result")
            dt = time.perf_counter() - t
            # A callback runs before its result is ready: all have run by now.
            if done[0] != m or errors:
                raise RuntimeError(f"{done[0]} callbacks and {len(errors)} errors for {m} tasks")
            return dt * 1e6 / m

        once(n // 10)  # warm-up
        return statistics.median(once(n) for _ in range(reps))


def sum_part(bounds):
    lo, hi = bounds
    return sum(i + i * i + i * i * i for i in range(lo, hi))


def split_speedups(split_map, part, reps, n):
    """The tutorial's job over range(n) split in two halves: in each of reps rounds, the
    serial time of part((0, n)) over the time of split_map(part, halves), which runs one
    call per half on the pool and gives their results (the sums checked equal). A
    smaller split first warms the pool up."""
    list(split_map(part, [(0, n // 20), (n // 20, n // 10)]))
    speedups = []
    for _ in range(reps):
        t = time.perf_counter()
        alone = part((0, n))
        serial = time.perf_counter() - t
        t = time.perf_counter()
        split = sum(split_map(part, [(0, n // 2), (n // 2, n)]))
        pooled = time.perf_counter() - t
        if split != alone:
            raise RuntimeError("the pool's sum differs from the serial one")
        speedups.append(serial / pooled)
    return speedups


def pool_cpu_speedup(reps, n):
    """The tutorial's job, sum(i + i*i + i*i*i for i in range(n)): its serial time over
    the time of pool.map(sum_part, halves, 1) on a forked Pool of 2 workers started
    before timing, both timed in each repetition (the sums checked equal): the median of
    the repetitions."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        speedups = split_speedups(lambda f, xs: pool.map(f, xs, 1), sum_part, reps, n)
    return statistics.median(speedups)


def dict_ops(d, conn):
    """A child timing operations on a manager's dict: for each (op, n) received, n sets
    or gets of small integers, answered with microseconds per operation; n == 0 ends."""
    while True:
        op, n = conn.recv()
        if n == 0:
            return
        t = time.perf_counter()
        if op == "set":
            for i in range(n):
                d[i % 64] = i
        else:
            for i in range(n):
                d.get(i % 64)
        conn.send((time.perf_counter() - t) * 1e6 / n)


def manager_dict(op, reps, n):
    """Microseconds per d[k] = v (op "set") or d.get(k) (op "get") on a
    multiprocessing.Manager() dict from a forked child, the manager and the child started
    before timing: the median of the repetitions."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        d = manager.dict({i: i for i in range(64)})
        here, there = ctx.Pipe()
        p = ctx.Process(target=dict_ops, args=(d, there))
        p.start()
        here.send((op, n // 10))  # warm-up
        here.recv()
        means = []
        for _ in range(reps):
            here.send((op, n))
            means.append(here.recv())
        here.send((op, 0))
        p.join()
    return statistics.median(means)


def queue_echo(inbox, outbox):
    """A child putting every item it gets from inbox on outbox, until None."""
    while True:
        item = inbox.get()
        if item is None:
            return
        outbox.put(item)


def manager_queue_rtt(reps, n):
    """Microseconds per round trip through two multiprocessing.Manager() queues: the
    parent puts an integer on one, a forked child gets it and puts it on the other, the
    parent gets it back; the manager and the child started before timing. The median of
    the repetitions' means."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        inbox, outbox = manager.Queue(), manager.Queue()
        p = ctx.Process(target=queue_echo, args=(inbox, outbox))
        p.start()

        def round_trips(n):
            for i in range(n):
                inbox.put(i)
                back = outbox.get(timeout=60)
                if back != i:
                    raise RuntimeError(f"sent {i}, got {back} back")

        round_trips(n // 10)  # warm-up
        means = []
        for _ in range(reps):
            t = time.perf_counter()
            round_trips(n)
            means.append((time.perf_counter() - t) * 1e6 / n)
        inbox.put(None)
        p.join()
    return statistics.median(means)


# name -> (quick (reps, per_rep), full (reps, per_rep), measure(reps, per_rep), unit)
WORKLOADS = {
    "start_join_spawn": ((3, 4), (5, 10), lambda r, n: start_join("spawn", r, n), "us"),
    "start_join_fork": ((3, 40), (5, 200), lambda r, n: start_join("fork", r, n), "us"),
    "start_join_forkserver": (
        (3, 15),
        (5, 60),
        lambda r, n: start_join("forkserver", r, n),
        "us",
    ),
    "pipe_rtt_bytes": (
        (5, 5000),
        (9, 20000),
        lambda r, n: pipe_rtt(echo_bytes, "send_bytes", "recv_bytes", MSG, b"", r, n),
        "us",
    ),
    "pipe_rtt_value": (
        (5, 5000),
        (9, 20000),
        lambda r, n: pipe_rtt(echo_value, "send", "recv", VALUE, None, r, n),
        "us",
    ),
    "lock_uncontended": ((5, 200_000), (9, 1_000_000), lock_uncontended, "ns"),
    # per_rep: increments per process
    "value_contended": ((3, 200_000), (5, 200_000), value_contended, "s"),
    "event_pingpong": ((5, 1000), (9, 3000), event_pingpong, "us"),
    # per_rep: bytes of the segment
    "shm_bandwidth": ((3, 64 << 20), (5, 256 << 20), shm_bandwidth, "GB/s"),
    # per_rep: unused (one round trip, or one child, per repetition)
    "pipe_large_bytes": (
        (2, 1),
        (5, 1),
        lambda r, n: pipe_large(echo_bytes, "send_bytes", "recv_bytes", large_bytes(), b"", r),
        "GB/s",
    ),
    "pipe_large_value": (
        (2, 1),
        (5, 1),
        lambda r, n: pipe_large(echo_value, "send", "recv", large_bytes(), None, r),
        "GB/s",
    ),
    "pipe_large_f64": (
        (2, 1),
        (5, 1),
        lambda r, n: pipe_large(echo_value, "send", "recv", large_floats(), None, r),
        "GB/s",
    ),
    "spawn_result_large": ((2, 1), (5, 1), lambda r, n: spawn_result_large(r), "GB/s"),
    # per_rep: items through the queue (all producers together)
    "queue_small_1p1c": (
        (3, 100_000),
        (5, 500_000),
        lambda r, n: queue_small(1, r, n),
        "msgs/s",
    ),
    "queue_small_2p1c": (
        (3, 100_000),
        (5, 500_000),
        lambda r, n: queue_small(2, r, n),
        "msgs/s",
    ),
    # per_rep: items of 1 MiB
    "queue_large": ((3, 64), (5, 256), queue_large, "MB/s"),
    "joinable_roundtrip": ((5, 1000), (9, 3000), joinable_roundtrip, "us"),
    # per_rep: items (tasks) per map or per batch of apply_async
    "pool_map_small": (
        (3, 200_000),
        (5, 200_000),
        lambda r, n: pool_map(r, n, None),
        "us",
    ),
    "pool_map_chunk1": ((3, 20_000), (5, 20_000), lambda r, n: pool_map(r, n, 1), "us"),
    "pool_apply_async": ((3, 20_000), (5, 20_000), pool_apply_async, "us"),
    # per_rep: the job's range (pure Python runs it about 100x slower than Rust)
    "pool_cpu_speedup": ((5, 1_000_000), (9, 2_000_000), pool_cpu_speedup, "x"),
    # per_rep: operations on the dict
    "manager_dict_set": ((3, 5000), (5, 20000), lambda r, n: manager_dict("set", r, n), "us"),
    "manager_dict_get": ((3, 5000), (5, 20000), lambda r, n: manager_dict("get", r, n), "us"),
    # per_rep: round trips through the two queues
    "manager_queue_rtt": ((3, 2000), (5, 10000), manager_queue_rtt, "us"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="few repetitions")
    size.add_argument("--full", action="store_true", help="more repetitions (the default)")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="only these")
    args = parser.parse_args()
    for name in args.workload or list(WORKLOADS):
        quick, full, measure, unit = WORKLOADS[name]
        reps, per_rep = quick if args.quick else full
        value = measure(reps, per_rep)
        print(
            json.dumps(
                {
                    "workload": name,
                    "unit": unit,
                    "value": float(f"{value:.4g}"),
                    "reps": reps,
                    "per_rep": per_rep,
                    "python": platform.python_version(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())

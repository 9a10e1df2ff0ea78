#!/usr/bin/env python3
"""mpi4py.futures on the multiproc benchmark's MPI pool workloads.

Runs as rank 0 of an MPI job whose other ranks serve mpi4py.futures' MPIPoolExecutor:

    mpirun -n 3 python3 -m mpi4py.futures bench_mpi4py.py --workload NAME [--samples K] [--quick]

Measures one workload: an untimed warm-up, then K samples. Prints one JSON object:
    {"workload": "...", "unit": "us", "samples": [...], "python": "3.x.y", "mpi4py": "4.x.y"}

Units: "us" (microseconds per task), "MB/s" (10^6 bytes of arguments per second), "x" (a
speedup factor).
"""

import argparse
import json
import platform
import sys
import time

import mpi4py
from bench_cpython import split_speedups
from mpi4py.futures import MPIPoolExecutor

CHUNK1_TASKS = 20_000
LARGE_ITEMS = 200
LARGE_SIZE = 1 << 20


def identity(x):
    return x


def weigh(b):
    """The large row's task: the argument's length and last byte."""
    return len(b), b[-1]


def sum_part(bounds):
    lo, hi = bounds
    return sum(i + i * i + i * i * i for i in range(lo, hi))


def map_chunk1(ex, samples, quick):
    """Microseconds per task of list(ex.map(identity, range(20_000), chunksize=1)), the
    results checked after the clock stops."""
    n = CHUNK1_TASKS
    expected = list(range(n))
    if list(ex.map(identity, range(n // 10), chunksize=1)) != expected[: n // 10]:
        raise RuntimeError("wrong results in the warm-up")
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        got = list(ex.map(identity, range(n), chunksize=1))
        elapsed = time.perf_counter() - t
        if got != expected:
            raise RuntimeError("wrong results")
        out.append(elapsed * 1e6 / n)
    return out


def map_large(ex, samples, quick):
    """MB/s of arguments through list(ex.map(weigh, args, chunksize=1)) over 200 bytes
    objects of 1 MiB (item i is made of the byte i % 251), the answers checked."""
    args = [bytes([i % 251]) * LARGE_SIZE for i in range(LARGE_ITEMS)]
    expected = [(LARGE_SIZE, i % 251) for i in range(LARGE_ITEMS)]
    warm = LARGE_ITEMS // 10
    if list(ex.map(weigh, args[:warm], chunksize=1)) != expected[:warm]:
        raise RuntimeError("wrong results in the warm-up")
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        got = list(ex.map(weigh, args, chunksize=1))
        elapsed = time.perf_counter() - t
        if got != expected:
            raise RuntimeError("wrong results")
        out.append(LARGE_ITEMS * LARGE_SIZE / 1e6 / elapsed)
    return out


def cpu_speedup(ex, samples, quick):
    """The job of bench_cpython.py's pool_cpu_speedup over range(n) (2,000,000; 1,000,000
    in a quick run): its serial time over the time of ex.map(sum_part, halves,
    chunksize=1), both timed in each sample, the sums checked equal."""
    n = 1_000_000 if quick else 2_000_000
    return split_speedups(lambda f, xs: ex.map(f, xs, chunksize=1), sum_part, samples, n)


# name -> (measure(executor, samples, quick), unit)
WORKLOADS = {
    "mpi_pool_map_chunk1": (map_chunk1, "us"),
    "mpi_pool_map_large": (map_large, "MB/s"),
    "mpi_pool_cpu_speedup": (cpu_speedup, "x"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smaller CPU job")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples needs a count above 0")
    measure, unit = WORKLOADS[args.workload]
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        if workers != 2:
            raise RuntimeError(f"{workers} worker ranks, not 2: run with mpirun -n 3")
        samples = measure(ex, args.samples, args.quick)
    print(
        json.dumps(
            {
                "workload": args.workload,
                "unit": unit,
                "samples": [float(f"{v:.4g}") for v in samples],
                "python": platform.python_version(),
                "mpi4py": mpi4py.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

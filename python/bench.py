"""What the Python bindings cost: push and pull of 1M float32 keys from numpy,
next to the same push and pull through the Rust API, in one run.

    python python/bench.py [--keys 1000000] [--rounds 5] [--blocks 3]

Both sides run a fresh local cluster of one server and one worker in this
process, on the same runtime: a round pushes a value for every key and waits,
then pulls them all back. The Rust side (``pslite._bench_rust``) copies the
keys and values into the request and the pulled values into a ``Vec``; the
Python side sends the numpy arrays without a copy and copies the pulled values
into a new array. Blocks of rounds alternate between the two sides so that a
busy machine slows both alike; the first round of each cluster (which
inserts the keys) is left out of the medians.
"""

import argparse
import statistics
import time

import numpy as np

import pslite


def python_rounds(keys, rounds):
    values = np.ones(len(keys), dtype=np.float32)
    times = []
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        for _ in range(rounds):
            start = time.perf_counter()
            worker.push_wait(keys, values)
            pushed = time.perf_counter()
            pulled = worker.pull_wait(keys)
            done = time.perf_counter()
            assert len(pulled) == len(keys)
            times.append((pushed - start, done - pushed))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per cluster (the first is left out)")
    parser.add_argument("--blocks", type=int, default=3, help="clusters per side, alternating")
    args = parser.parse_args()
    keys = np.arange(args.keys, dtype=np.uint64)
    rust, python = [], []
    for _ in range(args.blocks):
        rust += pslite._bench_rust(args.keys, args.rounds)[1:]
        python += python_rounds(keys, args.rounds)[1:]

    def medians(times):
        push = statistics.median(t[0] for t in times)
        pull = statistics.median(t[1] for t in times)
        total = statistics.median(t[0] + t[1] for t in times)
        return push, pull, total

    rust_ms = [1e3 * t for t in medians(rust)]
    python_ms = [1e3 * t for t in medians(python)]
    print(
        f"push + pull of {args.keys:,} float32 keys, 1 server + 1 worker in one process, "
        f"median of {len(rust)} rounds each"
    )
    print(f"{'':8} {'push ms':>9} {'pull ms':>9} {'total ms':>9}")
    for name, row in (("rust", rust_ms), ("python", python_ms)):
        print(f"{name:8} {row[0]:9.2f} {row[1]:9.2f} {row[2]:9.2f}")
    ratios = [p / r for p, r in zip(python_ms, rust_ms)]
    print(f"{'ratio':8} {ratios[0]:9.2f} {ratios[1]:9.2f} {ratios[2]:9.2f}   (python / rust; lower is better)")


if __name__ == "__main__":
    main()

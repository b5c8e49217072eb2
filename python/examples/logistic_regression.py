"""Logistic regression trained by asynchronous SGD on a pslite cluster.

The servers hold the weights and run the ``sgd`` handle (``w -= lr * g``
per key); each worker trains on its shard of a seeded synthetic data set
(rank ``r`` of ``n`` takes every ``n``-th example from ``r``), pushing
minibatch gradients and pulling the new weights in one ``push_pull`` per
step, then reports held-out accuracy next to that of the planted model that
generated the labels.

As separate processes, started by ``pslite-launch`` (it runs this script
once per node with ``DMLC_ROLE`` and the cluster's address set)::

    cargo build --release -p pslite-tools --bin pslite-launch
    target/release/pslite-launch --servers 2 --workers 3 -- python python/examples/logistic_regression.py

Without ``DMLC_ROLE``, the same job runs on a ``LocalCluster`` in this
process, one thread per worker::

    python python/examples/logistic_regression.py

Options: ``--epochs``, ``--batch``, ``--learning-rate``, ``--seed``; and
``--workers``, ``--servers`` for the local run.
"""

import argparse
import sys
import threading

import numpy as np

import pslite

FEATURES = 40
TRAIN_EXAMPLES = 24_000
HELD_OUT_EXAMPLES = 6_000
# A worker whose model is this much less accurate than the planted one fails
# the run (the exit status pslite-launch and the tests look at).
ACCURACY_SLACK = 0.03


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--servers", type=int, default=2, help="local run only")
    parser.add_argument("--workers", type=int, default=2, help="local run only")
    return parser.parse_args()


def synthetic(seed):
    """Examples from a planted model: features N(0, 1), labels drawn from
    the model's probabilities. Every process draws the same data."""
    rng = np.random.default_rng(seed)
    planted = rng.normal(0.0, 3.0 / np.sqrt(FEATURES), FEATURES + 1)
    examples = TRAIN_EXAMPLES + HELD_OUT_EXAMPLES
    features = np.hstack([rng.normal(size=(examples, FEATURES)), np.ones((examples, 1))])
    labels = (rng.random(examples) < sigmoid(features @ planted)).astype(np.float64)
    train = (features[:TRAIN_EXAMPLES], labels[:TRAIN_EXAMPLES])
    held_out = (features[TRAIN_EXAMPLES:], labels[TRAIN_EXAMPLES:])
    return train, held_out, planted


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def accuracy(weights, data):
    features, labels = data
    return float(np.mean((features @ weights > 0) == (labels > 0.5)))


def model_keys():
    """One key per weight (the last is the bias), spread over the whole key
    space so that every server holds some."""
    stride = np.uint64(2**64 // (FEATURES + 1))
    return np.arange(FEATURES + 1, dtype=np.uint64) * stride


def train(worker, args):
    """Trains on this worker's shard, then reports held-out accuracy.
    Returns whether it came within ACCURACY_SLACK of the planted model."""
    (features, labels), held_out, planted = synthetic(args.seed)
    rank, workers = worker.rank, worker.num_workers
    features, labels = features[rank::workers], labels[rank::workers]
    keys = model_keys()
    weights = worker.pull_wait(keys).astype(np.float64)
    order = np.random.default_rng(args.seed + 1 + rank)
    for _ in range(args.epochs):
        shuffled = order.permutation(len(labels))
        for start in range(0, len(labels), args.batch):
            batch = shuffled[start : start + args.batch]
            errors = sigmoid(features[batch] @ weights) - labels[batch]
            gradient = (features[batch].T @ errors / len(batch)).astype(np.float32)
            weights = worker.push_pull_wait(keys, gradient).astype(np.float64)
    # Once every worker is past the barrier, all their pushes are in.
    worker.barrier()
    weights = worker.pull_wait(keys).astype(np.float64)
    trained, best = accuracy(weights, held_out), accuracy(planted, held_out)
    print(
        f"worker {rank}: {len(labels)} examples, held-out accuracy {trained:.4f} "
        f"(planted model {best:.4f})",
        flush=True,
    )
    return trained >= best - ACCURACY_SLACK


def main():
    args = parse_args()
    role = pslite.role()
    if role == "scheduler":
        pslite.run_scheduler()
        return 0
    if role == "server":
        pslite.run_server(handle="sgd", learning_rate=args.learning_rate)
        return 0
    if role == "worker":
        worker = pslite.start()
        ok = train(worker, args)
        worker.finalize()
        return 0 if ok else 1
    # No launcher: the whole cluster in this process, a thread per worker.
    results = []
    with pslite.LocalCluster(
        args.servers, args.workers, handle="sgd", learning_rate=args.learning_rate
    ) as cluster:
        threads = [
            threading.Thread(target=lambda w: results.append(train(w, args)), args=(cluster.worker(i),))
            for i in range(args.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return 0 if len(results) == args.workers and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

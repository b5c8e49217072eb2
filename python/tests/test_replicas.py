"""Replicated key ranges from Python: LocalCluster(replicas=R).

A push goes to its range's head and a pull to its tail, another server
when R > 1: a pull that returns every acknowledged push shows that the
head's state reached the tail, for the sum and for an optimizer whose
per-key state travels with the weights.
"""

import threading

import numpy as np
import pytest

import pslite

# Both ends of the key space and its middle: every request reaches each
# of three equal ranges.
KEYS = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64)


@pytest.mark.parametrize("replicas", [2, 3])
def test_pulls_at_the_tail_return_every_push_acknowledged_at_the_head(replicas):
    rounds, workers = 10, 2
    values = np.arange(1, len(KEYS) + 1, dtype=np.float32)
    with pslite.LocalCluster(3, workers, replicas=replicas) as cluster:
        assert cluster.replicas == replicas
        assert f"replicas={replicas}" in repr(cluster)

        def work(worker):
            for done in range(1, rounds + 1):
                worker.push_wait(KEYS, values)
                # Program order: this worker's own pushes are in what it reads.
                assert np.all(worker.pull_wait(KEYS) >= values * done)
            worker.barrier()

        threads = [threading.Thread(target=work, args=(cluster.worker(i),)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pulled = cluster.worker(0).pull_wait(KEYS)
        np.testing.assert_array_equal(pulled, values * rounds * workers)
        after = cluster.worker(1).push_pull_wait(KEYS, values)
        np.testing.assert_array_equal(after, values * (rounds * workers + 1))


def test_an_optimizers_state_reaches_the_tail_as_its_head_computed_it():
    gradients = [np.array([1.0, 2.0, 4.0, -1.0, 0.5, 3.0], np.float32) * (i + 1) for i in range(5)]
    pulled = {}
    for replicas in (1, 2):
        with pslite.LocalCluster(3, 1, handle="adagrad", learning_rate=0.1, replicas=replicas) as cluster:
            worker = cluster.worker(0)
            for gradient in gradients:
                worker.push_wait(KEYS, gradient)
            pulled[replicas] = worker.pull_wait(KEYS)
    assert np.all(pulled[1] != 0)
    # The tail installs the head's bits: the same weights as one copy.
    np.testing.assert_array_equal(pulled[2], pulled[1])


def test_more_copies_than_servers_are_refused_by_name():
    with pytest.raises(pslite.PsliteError, match="replicas"):
        pslite.LocalCluster(2, 1, replicas=3)


def test_a_callable_handle_cannot_be_replicated():
    def handle(keys, values, is_push):
        return values

    with pytest.raises(ValueError, match="cannot be replicated"):
        pslite.LocalCluster(2, 1, handle, replicas=2)
    # One copy is what a callable serves.
    with pslite.LocalCluster(1, 1, handle, replicas=1) as cluster:
        assert cluster.replicas == 1

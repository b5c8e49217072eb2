"""Workers on an in-process LocalCluster: exact sums, timestamps, dtypes, errors."""

import gc
import threading

import numpy as np
import pytest

import pslite

# Keys at both ends of the key space and around its middle, so that with two
# servers every request is sliced across both.
EDGE_KEYS = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64)


def test_pushes_from_every_worker_sum_exactly_across_servers():
    rounds, workers = 20, 3
    values = np.arange(1, len(EDGE_KEYS) + 1, dtype=np.float32)
    with pslite.LocalCluster(2, workers) as cluster:

        def work(worker):
            for _ in range(rounds):
                worker.push_wait(EDGE_KEYS, values)
            worker.barrier()

        threads = [threading.Thread(target=work, args=(cluster.worker(i),)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pulled = cluster.worker(0).pull_wait(EDGE_KEYS)
        assert pulled.dtype == np.float32
        np.testing.assert_array_equal(pulled, values * rounds * workers)


def test_push_pull_returns_the_sum_including_its_own_push():
    with pslite.LocalCluster(2, 1) as cluster:
        worker = cluster.worker(0)
        worker.push_wait(EDGE_KEYS, np.full(len(EDGE_KEYS), 2.0, np.float32))
        after = worker.push_pull_wait(EDGE_KEYS, np.full(len(EDGE_KEYS), 3.0, np.float32))
        np.testing.assert_array_equal(after, np.full(len(EDGE_KEYS), 5.0, np.float32))


def test_requests_return_timestamps_that_wait_completes_in_any_order():
    keys = np.array([3, 5, 7], dtype=np.uint64)
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        pushes = [worker.push(keys, np.ones(3, np.float32)) for _ in range(10)]
        assert len(set(pushes)) == 10 and pushes == sorted(pushes)
        for ts in reversed(pushes):
            worker.wait(ts)
        pull = worker.pull(keys)
        push_pull = worker.push_pull(keys, np.ones(3, np.float32))
        np.testing.assert_array_equal(worker.wait_pull(push_pull), [11, 11, 11])
        np.testing.assert_array_equal(worker.wait_pull(pull), [10, 10, 10])


def test_never_pushed_keys_pull_as_zeros():
    with pslite.LocalCluster(2, 1) as cluster:
        np.testing.assert_array_equal(cluster.worker(0).pull_wait(EDGE_KEYS), np.zeros(len(EDGE_KEYS)))


def test_several_values_per_key_and_multidimensional_arrays_are_read_flat():
    keys = np.array([10, 20], dtype=np.uint64)
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        worker.push_wait(keys, values)
        np.testing.assert_array_equal(worker.pull_wait(keys), values.ravel())


@pytest.mark.parametrize(
    "dtype, value",
    [(np.float64, 1.0 + 2.0**-40), (np.int32, 7), (np.int64, 2**40 + 1), (np.uint8, 3)],
)
def test_stores_of_other_dtypes_keep_their_precision(dtype, value):
    keys = np.array([1, 2**63], dtype=np.uint64)
    with pslite.LocalCluster(2, 1, dtype=dtype) as cluster:
        worker = cluster.worker(0)
        worker.push_wait(keys, np.full(2, value, dtype))
        pulled = worker.pull_wait(keys, dtype)
        assert pulled.dtype == dtype
        np.testing.assert_array_equal(pulled, np.full(2, value, dtype))


def test_strided_arrays_and_lists_are_converted():
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        keys = np.arange(1, 9, dtype=np.uint64)[::2]
        assert not keys.flags.c_contiguous
        worker.push_wait(keys, np.arange(8, dtype=np.float32)[::2])
        worker.push_wait([1, 3, 5, 7], [1.0, 1.0, 1.0, 1.0])
        np.testing.assert_array_equal(worker.pull_wait([1, 3, 5, 7]), [1, 3, 5, 7])


def test_pushed_arrays_stay_valid_after_the_caller_drops_them():
    n = 1 << 16
    keys = np.arange(n, dtype=np.uint64)
    with pslite.LocalCluster(2, 1) as cluster:
        worker = cluster.worker(0)
        ts = worker.push(keys.copy(), np.ones(n, np.float32))
        gc.collect()
        worker.wait(ts)
        assert worker.pull_wait(keys).sum() == n


def test_unsorted_and_duplicate_keys_raise_pslite_error():
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        with pytest.raises(pslite.PsliteError, match="strictly ascending"):
            worker.push(np.array([2, 1], np.uint64), np.ones(2, np.float32))
        with pytest.raises(pslite.PsliteError, match="duplicate key 5"):
            worker.pull(np.array([5, 5], np.uint64))
        assert issubclass(pslite.PsliteError, RuntimeError)


def test_values_that_do_not_divide_among_the_keys_raise_pslite_error():
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        with pytest.raises(pslite.PsliteError, match="length mismatch"):
            worker.push_wait(np.array([1, 2, 3], np.uint64), np.ones(2, np.float32))
        with pytest.raises(pslite.PsliteError, match="a push needs values"):
            worker.push_pull(np.array([1, 2], np.uint64), np.ones(0, np.float32))


def test_a_store_refuses_another_dtype_and_the_wait_raises():
    keys = np.array([1], np.uint64)
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        ts = worker.push(keys, np.ones(1, np.float64))
        with pytest.raises(pslite.PsliteError, match="store holds F32, push has F64"):
            worker.wait(ts)
        with pytest.raises(pslite.PsliteError, match="pull asks for I64"):
            worker.pull_wait(keys, np.int64)
        ts = worker.push(keys, np.ones(1, np.float32))
        with pytest.raises(pslite.PsliteError, match="request [0-9]+ is no pull"):
            worker.wait_pull(ts)


def test_arguments_of_the_wrong_type_raise_type_error():
    with pslite.LocalCluster(1, 1) as cluster:
        worker = cluster.worker(0)
        with pytest.raises(TypeError, match="keys must be a uint64 array"):
            worker.push(np.array([1, 2], np.int64), np.ones(2, np.float32))
        with pytest.raises(TypeError, match="values must be float32"):
            worker.push(np.array([1, 2], np.uint64), np.ones(2, np.float16))
        with pytest.raises(OverflowError, match="key at index 0 .-1."):
            worker.pull([-1])
        with pytest.raises(OverflowError, match="key at index 1"):
            worker.pull([1, 2**64])
        with pytest.raises(TypeError, match=r"key at index 0 \(1\.5\)"):
            worker.pull([1.5])
        with pytest.raises(TypeError, match="key at index 1"):
            worker.pull([1, np.float64(2.0)])
        with pytest.raises(ValueError, match="unknown group"):
            worker.barrier("everyone")
        with pytest.raises(IndexError):
            cluster.worker(1)


def test_a_finalized_cluster_refuses_requests():
    cluster = pslite.LocalCluster(1, 1)
    worker = cluster.worker(0)
    assert cluster.finalize() == []
    assert cluster.finalize() == [], "the second finalize does nothing"
    with pytest.raises(pslite.PsliteError):
        worker.push_wait([1], [1.0])
    with pytest.raises(pslite.PsliteError, match="shut down"):
        cluster.worker(0)


def test_leaving_the_block_with_an_exception_aborts_the_cluster():
    with pytest.raises(KeyError):
        with pslite.LocalCluster(1, 1) as cluster:
            worker = cluster.worker(0)
            raise KeyError("boom")
    assert "shut down" in repr(cluster)
    with pytest.raises(pslite.PsliteError):
        worker.push_wait([1], [1.0])


def test_workers_know_their_place_in_the_cluster():
    with pslite.LocalCluster(2, 3) as cluster:
        workers = [cluster.worker(i) for i in range(3)]
        assert sorted(w.rank for w in workers) == [0, 1, 2]
        assert len({w.id for w in workers}) == 3
        assert all(w.id % 2 == 1 and w.id >= 9 for w in workers), "ps-lite's worker ids"
        assert all(isinstance(w, pslite.Node) and w.role == "worker" for w in workers)
        assert (workers[0].num_servers, workers[0].num_workers) == (2, 3)
        assert (cluster.num_servers, cluster.num_workers) == (2, 3)


def test_start_without_a_launcher_names_the_missing_variable(monkeypatch):
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    assert pslite.role() is None
    with pytest.raises(pslite.PsliteError, match="DMLC_ROLE"):
        pslite.start()
    monkeypatch.setenv("DMLC_ROLE", "Worker")
    assert pslite.role() == "worker"

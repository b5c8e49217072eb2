"""Server handles: optimizers by name, and Python callables."""

import threading

import numpy as np
import pytest

import pslite

KEYS = np.array([1, 2**62, 2**63 + 5], dtype=np.uint64)


def test_sgd_steps_against_each_pushed_gradient():
    with pslite.LocalCluster(2, 1, handle="sgd", learning_rate=0.5) as cluster:
        worker = cluster.worker(0)
        np.testing.assert_array_equal(worker.pull_wait(KEYS), [0, 0, 0])
        worker.push_wait(KEYS, np.array([1.0, 2.0, -4.0], np.float32))
        np.testing.assert_array_equal(worker.pull_wait(KEYS), [-0.5, -1.0, 2.0])
        after = worker.push_pull_wait(KEYS, np.array([1.0, 0.0, 0.0], np.float32))
        np.testing.assert_array_equal(after, [-1.0, -1.0, 2.0])


def test_adagrad_scales_each_step_by_the_keys_gradient_history():
    rate, epsilon = 0.1, 0.5
    with pslite.LocalCluster(1, 1, handle="adagrad", learning_rate=rate, epsilon=epsilon) as cluster:
        worker = cluster.worker(0)
        gradient = np.array([1.0, 2.0, 4.0], np.float32)
        weights = worker.push_pull_wait(KEYS, gradient)
        expected = -rate * gradient / (np.abs(gradient) + epsilon)
        np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_ftrl_keeps_weights_at_zero_while_gradients_stay_within_l1():
    with pslite.LocalCluster(1, 1, handle="ftrl", l1=1.0) as cluster:
        weights = cluster.worker(0).push_pull_wait(KEYS, np.array([0.5, -0.5, 3.0], np.float32))
        assert weights[0] == 0 and weights[1] == 0 and weights[2] < 0


def test_optimizer_options_are_checked():
    with pytest.raises(TypeError, match="it takes learning_rate"):
        pslite.LocalCluster(1, 1, handle="sgd", alpha=1.0)
    with pytest.raises(pslite.PsliteError, match="learning_rate = -1 must be finite and positive"):
        pslite.LocalCluster(1, 1, handle="sgd", learning_rate=-1.0)
    with pytest.raises(pslite.PsliteError, match="unknown optimizer `adam`"):
        pslite.LocalCluster(1, 1, handle="adam")
    with pytest.raises(ValueError, match="float32 weights"):
        pslite.LocalCluster(1, 1, handle="sgd", dtype=np.float64)
    with pytest.raises(TypeError, match="takes no options"):
        pslite.LocalCluster(1, 1, learning_rate=0.1)


def test_an_optimizer_refuses_other_commands_and_types():
    with pslite.LocalCluster(1, 1, handle="sgd") as cluster:
        worker = cluster.worker(0)
        with pytest.raises(pslite.PsliteError, match="unknown command 3"):
            worker.push_wait(KEYS, np.ones(3, np.float32), cmd=3)
        with pytest.raises(pslite.PsliteError, match="works in F32"):
            worker.push_wait(KEYS, np.ones(3, np.float64))


def test_a_python_handle_serves_each_servers_slice():
    store = {}
    calls = []
    lock = threading.Lock()

    def handle(keys, values, is_push):
        assert keys.dtype == np.uint64
        with lock:
            calls.append((keys.copy(), is_push))
            if is_push:
                for key, value in zip(keys.tolist(), values.tolist()):
                    store[key] = store.get(key, 0.0) + value
            return [store.get(key, 0.0) * 10 for key in keys.tolist()]

    with pslite.LocalCluster(2, 1, handle=handle) as cluster:
        worker = cluster.worker(0)
        worker.push_wait(KEYS, np.array([1.0, 2.0, 3.0], np.float32))
        np.testing.assert_array_equal(worker.pull_wait(KEYS), [10, 20, 30])
        np.testing.assert_array_equal(worker.push_pull_wait(KEYS, np.ones(3, np.float32)), [20, 30, 40])
        pulled = worker.pull_wait(KEYS, np.float64)
        assert pulled.dtype == np.float64
    # Two servers: the keys below 2**63 go to one, the last to the other.
    assert all(len(keys) in (1, 2) for keys, _ in calls)
    assert [is_push for _, is_push in calls].count(True) == 4


def test_an_exception_in_a_python_handle_fails_the_request_with_its_text():
    def handle(keys, values, is_push):
        if is_push:
            raise ValueError("no pushes here")
        return None

    with pslite.LocalCluster(1, 1, handle=handle) as cluster:
        worker = cluster.worker(0)
        with pytest.raises(pslite.PsliteError, match="ValueError: no pushes here"):
            worker.push_wait(KEYS, np.ones(3, np.float32))
        with pytest.raises(pslite.PsliteError, match="returned None for a pull"):
            worker.pull_wait(KEYS)


def test_a_python_handle_cannot_block_on_pslite():
    with pslite.LocalCluster(1, 1) as inner:
        inner_worker = inner.worker(0)

        def handle(keys, values, is_push):
            inner_worker.pull_wait(keys)
            return values

        with pslite.LocalCluster(1, 1, handle=handle) as cluster:
            with pytest.raises(pslite.PsliteError, match="cannot block inside a server handle"):
                cluster.worker(0).push_wait(KEYS, np.ones(3, np.float32))


def test_a_handle_must_be_a_name_or_a_callable():
    with pytest.raises(TypeError, match="handle must be a name"):
        pslite.LocalCluster(1, 1, handle=3)
    with pytest.raises(TypeError, match="a callable handle takes no options"):
        pslite.LocalCluster(1, 1, handle=lambda k, v, p: v, learning_rate=1.0)


def test_a_python_handle_may_change_the_array_it_answered_with():
    state = np.zeros(len(KEYS), np.float32)

    def handle(keys, values, is_push):
        if is_push:
            state[:] += values  # in place: the array answered last time changes
        return state

    with pslite.LocalCluster(1, 1, handle=handle) as cluster:
        worker = cluster.worker(0)
        in_flight = [worker.push_pull(KEYS, np.ones(len(KEYS), np.float32)) for _ in range(50)]
        answers = [worker.wait_pull(ts) for ts in in_flight]
    for count, answer in enumerate(answers, start=1):
        np.testing.assert_array_equal(answer, np.full(len(KEYS), count, np.float32))

"""keras_zoo.distribute: strategies from flags, batch splitting, distributed equivalence."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_zoo import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Replicas:
    """Stands in for a strategy: only the replica count matters to batch splitting."""

    def __init__(self, n):
        self.num_replicas_in_sync = n


def test_per_replica_batch_splits_global_batch():
    assert distribute.per_replica_batch_size(64, _Replicas(8)) == 8
    assert distribute.per_replica_batch_size(64, _Replicas(1)) == 64


def test_per_replica_batch_not_divisible_names_values():
    with pytest.raises(distribute.DistributeError, match=r"33 is not divisible by the 2 "
                       r"replicas.*e\.g\. 32 or 34"):
        distribute.per_replica_batch_size(33, _Replicas(2))
    with pytest.raises(distribute.DistributeError, match="positive"):
        distribute.per_replica_batch_size(0, _Replicas(1))


def test_unknown_strategy_lists_choices():
    with pytest.raises(distribute.DistributeError, match="one_device"):
        distribute.get_strategy("gpu_cluster")


def test_one_device_strategy_on_cpu():
    strategy = distribute.get_strategy("one_device")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)
    assert "1 replica" in distribute.describe(strategy)


def test_tpu_without_a_name_fails_at_once(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribute, "_tpu_attached", lambda: False)
    with pytest.raises(distribute.DistributeError, match="--tpu=NAME"):
        distribute.get_strategy("tpu")


def test_tpu_at_dead_address_fails_fast_not_hangs(monkeypatch):
    # A bare grpc connect to a closed port blocks forever; the probe must not.
    port = _free_port()
    with pytest.raises(distribute.DistributeError,
                       match=f"no TPU answers at grpc://127.0.0.1:{port}"):
        distribute.get_strategy("tpu", tpu=f"grpc://127.0.0.1:{port}")
    # An address that never answers (a dropped SYN): the probe bounds the connect by
    # TPU_CONNECT_TIMEOUT and turns the timeout into the same one-line error.
    asked = []

    def silent(address, timeout=None):
        asked.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(distribute.socket, "create_connection", silent)
    with pytest.raises(distribute.DistributeError, match=r"no TPU answers at "
                                                         r"grpc://10.9.8.7:8470 \(timed out\)"):
        distribute.get_strategy("tpu", tpu="grpc://10.9.8.7:8470")
    assert asked == [(("10.9.8.7", 8470), distribute.TPU_CONNECT_TIMEOUT)]
    assert 0 < distribute.TPU_CONNECT_TIMEOUT <= 60


def test_auto_picks_tpu_when_named_and_multi_worker_from_tf_config(monkeypatch):
    monkeypatch.setattr(distribute, "_tpu_attached", lambda: False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute._auto_choice("my-tpu") == "tpu"
    assert distribute._auto_choice(None) == "one_device"
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    assert distribute._auto_choice(None) == "multi_worker"


def test_multi_worker_without_tf_config_explains(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.DistributeError, match="TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.DistributeError, match="not valid JSON"):
        distribute.get_strategy("multi_worker")


_MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_zoo import distribute
    distribute.split_cpu(2)  # before TensorFlow starts
    from experiments.train import train
    base = dict(preset="lenet5", dataset="digits", train_steps=6, eval_every=3,
                global_batch_size=32, learning_rate=3e-3, warmup_steps=2,
                eval_dataset="none", jit_compile=False)
    mirrored = train(dict(base, strategy="mirrored", model_dir=sys.argv[1] + "/m"))
    single = train(dict(base, strategy="one_device", model_dir=sys.argv[1] + "/o"))
    import keras, keras_zoo
    keras.utils.set_random_seed(0)  # the trainer's seed: the weights before training
    init = keras_zoo.from_preset("lenet5")
    pairs = zip(mirrored["model"].get_weights(), single["model"].get_weights(),
                init.get_weights())
    diff, moved = 0.0, 0.0
    for m, s, i in pairs:
        diff = max(diff, float(np.abs(m - s).max()))
        moved = max(moved, float(np.abs(s - i).max()))
    try:
        distribute.split_cpu(3)
        late = "no error"
    except distribute.DistributeError as e:
        late = str(e)
    print("RESULT", mirrored["replicas"], single["replicas"], diff, moved, "|", late)
""")


@pytest.mark.slow
def test_mirrored_two_cpus_matches_one_device(tmp_path, finish):
    """Same global batch, same seed: 2 replicas x 16 and 1 x 32 end at the same weights."""
    proc = subprocess.Popen([sys.executable, "-c", _MIRRORED, str(tmp_path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    stdout, stderr = finish(proc, "the mirrored-vs-one-device run")
    line = [x for x in stdout.splitlines() if x.startswith("RESULT")]
    assert line, stdout[-2000:] + stderr[-3000:]
    numbers, late = line[0].split("|")
    _, replicas_m, replicas_s, diff, moved = numbers.split()
    assert (int(replicas_m), int(replicas_s)) == (2, 1)
    assert float(moved) > 1e-3  # training moved the weights, so equality means something
    assert float(diff) < 1e-5
    assert "already initialised with 2" in late


_WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from experiments.train import train
    result = train(dict(preset="lenet5", dataset="digits", train_steps=4, eval_every=2,
                        global_batch_size=32, learning_rate=3e-3, strategy="multi_worker",
                        eval_dataset="none", model_dir=sys.argv[1]))
    np.savez(sys.argv[2], *result["model"].get_weights())
    print("RESULT", result["strategy"], result["replicas"], result["test_accuracy"])
""")


@pytest.mark.slow
def test_multi_worker_two_processes_end_identical(tmp_path, finish):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(tmp_path / "run"), str(tmp_path / f"w{i}.npz")],
                env=_env(TF_CONFIG=tf_config), cwd=REPO, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
        outputs = [finish(p, f"worker {i}") for i, p in enumerate(procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
        assert "RESULT CollectiveAllReduceStrategy 2" in stdout
    a, b = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    # the chief wrote the run; the other worker only its own checkpoints
    assert (tmp_path / "run" / "last" / "model.weights.h5").exists()
    assert list((tmp_path / "run" / "workers" / "worker_1" / "checkpoints").glob("ckpt-*"))

"""A tf.distribute strategy from flags: tpu | mirrored | multi_worker | one_device | auto.

    strategy = keras_zoo.distribute.get_strategy("auto")
    with strategy.scope():
        model = keras_zoo.from_preset("vit_tiny_digits")

* ``tpu``: ``TPUClusterResolver(tpu)`` (a Cloud TPU name, ``grpc://host:8470``
  or ``local`` on a TPU VM), connect, initialise the TPU system, ``TPUStrategy``.
  An unreachable TPU fails within seconds with a message instead of hanging.
* ``mirrored``: ``MirroredStrategy`` over the local GPUs, or, without GPUs,
  over the logical CPU devices (``split_cpu(n)`` before TensorFlow starts).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``.
* ``one_device``: the first GPU, else the CPU.
* ``auto``: TPU if one is named (``--tpu``, ``TPU_NAME``) or attached (TPU VM),
  else ``multi_worker`` when ``TF_CONFIG`` names several workers, else
  ``mirrored`` over several GPUs, else ``one_device``.
"""

import glob
import json
import os
import socket
import urllib.parse

from keras_zoo.backend import require_tensorflow_backend, tf

STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "one_device")
TPU_CONNECT_TIMEOUT = 10.0  # seconds; a grpc connect to a dead address blocks forever


class DistributeError(RuntimeError):
    """A strategy that cannot be built here; the message says why and what to do."""


def split_cpu(num_devices):
    """Splits the host CPU into ``num_devices`` logical devices, so that
    ``MirroredStrategy`` can be exercised without GPUs. Must run before
    TensorFlow initialises its devices (before any tensor is created)."""
    if num_devices < 1:
        raise DistributeError(f"split_cpu needs at least 1 device, got {num_devices}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == num_devices:
            return
        raise DistributeError(
            f"cannot split the CPU into {num_devices} logical devices: TensorFlow is "
            f"already initialised with {have}. Call split_cpu() (or pass "
            "--num_cpu_devices) before any TensorFlow work.") from e


def get_strategy(strategy="auto", tpu=None):
    """Returns a ``tf.distribute.Strategy`` for the name ``strategy``."""
    require_tensorflow_backend(f"keras_zoo.distribute.get_strategy({strategy!r})")
    if strategy not in STRATEGIES:
        raise DistributeError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if strategy == "auto":
        strategy = _auto_choice(tpu)
    if strategy == "tpu":
        return _tpu_strategy(tpu)
    if strategy == "multi_worker":
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if strategy == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def describe(strategy):
    """'MirroredStrategy, 2 replicas (/cpu:0, /cpu:1)': the line the trainer prints."""
    devices = getattr(strategy.extended, "worker_devices", ())
    shown = ", ".join(d.split("device:")[-1].lower() for d in devices[:8])
    more = f", ... {len(devices) - 8} more" if len(devices) > 8 else ""
    where = f" ({shown}{more})" if shown else ""
    worker = ""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver:
        worker = f", worker {resolver.task_type}:{resolver.task_id}"
    return (f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} "
            f"replica{'s' if strategy.num_replicas_in_sync != 1 else ''}{where}{worker}")


def per_replica_batch_size(global_batch_size, strategy):
    """global // replicas; a global batch that does not split evenly is an error,
    since replicas must see equal static shapes."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size <= 0:
        raise DistributeError(f"global batch size must be positive, got {global_batch_size}")
    if global_batch_size % replicas:
        lower = global_batch_size // replicas * replicas
        raise DistributeError(
            f"global batch size {global_batch_size} is not divisible by the "
            f"{replicas} replicas of {type(strategy).__name__}; use a multiple of "
            f"{replicas}, e.g. {lower or replicas} or {lower + replicas}")
    return global_batch_size // replicas


def is_chief(strategy):
    """True on the worker that writes checkpoints, presets and logs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "chief"
    return f"{resolver.task_type}_{resolver.task_id}"


# ---------------------------------------------------------------- internals

def _tf_config():
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from None


def _tpu_attached():
    # TPU VMs expose the chips as /dev/accel* (v2-v4) or /dev/vfio/* (v5e and later).
    return bool(glob.glob("/dev/accel*")) or bool(glob.glob("/dev/vfio/[0-9]*"))


def _auto_choice(tpu):
    if tpu or os.environ.get("TPU_NAME") or _tpu_attached():
        return "tpu"
    cluster = _tf_config().get("cluster", {})
    if sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")) > 1:
        return "multi_worker"
    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "one_device"


def _check_reachable(address):
    parsed = urllib.parse.urlparse(address)
    host, port = parsed.hostname, parsed.port or 8470
    try:
        with socket.create_connection((host, port), timeout=TPU_CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise DistributeError(
            f"--strategy=tpu: no TPU answers at {address} ({e}). Check the address, "
            "that the TPU is READY (gcloud compute tpus list) and in this network.") from None


def _tpu_strategy(tpu):
    tpu = tpu or os.environ.get("TPU_NAME") or ("local" if _tpu_attached() else "")
    if not tpu:
        raise DistributeError(
            "--strategy=tpu: no TPU named and none attached. Pass --tpu=NAME (a Cloud "
            "TPU name), --tpu=grpc://HOST:8470, or --tpu=local on a TPU VM.")
    if tpu.startswith("grpc://"):
        _check_reachable(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001  (URLError, NotFoundError, ValueError: "no TPU")
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise DistributeError(
            f"--strategy=tpu: could not reach or initialise TPU {tpu!r}: "
            f"{type(e).__name__}: {first}. Without a TPU use --strategy=auto.") from None
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_strategy():
    config = _tf_config()
    if not config.get("cluster") or not config.get("task"):
        raise DistributeError(
            "--strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task', e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}')
    return tf.distribute.MultiWorkerMirroredStrategy()

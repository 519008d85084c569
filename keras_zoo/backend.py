"""What differs between Keras backends, in one place.

keras_zoo's models, presets and ``fit`` run on any Keras 3 backend
(TensorFlow, JAX, PyTorch); its training door (tf.data, tf.distribute) and
export door (TFLite) are TensorFlow by nature. This module keeps the two apart:

* ``tf``: TensorFlow, imported on first use. ``import keras_zoo`` never imports
  it; a TF-only piece used without TensorFlow installed raises one
  ``BackendError`` naming the piece and the Keras backend.
* ``require_tensorflow_backend(what)``: for pieces that need TensorFlow to *be*
  the Keras backend (tf.distribute strategies, the TFLite exporter).
* The few primitives a custom ``train_step`` needs, for every backend:
  ``value_and_gradients`` (GradientTape / ``jax.value_and_grad`` / autograd),
  ``stateful_step`` (runs a step written with ``variable.assign`` as the
  stateless function Keras' JAX trainer compiles), and the tf.distribute
  replica helpers, which are identities elsewhere (JAX shards a global batch
  inside one compiled program, so a mean over the batch is already global).
"""

import importlib
import sys

import keras


class BackendError(RuntimeError):
    """A TensorFlow-only piece used where TensorFlow is missing or not the backend."""


def backend():
    return keras.backend.backend()


def tensorflow(what="this part of keras_zoo"):
    """The ``tensorflow`` module, or one clear BackendError if it is not installed."""
    try:
        return importlib.import_module("tensorflow")
    except ImportError as e:
        raise BackendError(
            f"{what} needs TensorFlow (tf.data pipelines, tf.distribute, TFLite export), "
            f"which cannot be imported here ({e}); the Keras backend is {backend()!r}. "
            "Install tensorflow, or use the Keras code door (models, presets, fit on "
            "arrays), which needs no TensorFlow.") from None


class _LazyTensorFlow:
    """``tf`` for modules whose TensorFlow use sits inside functions: the import
    happens at the first attribute access, not when the module is imported."""

    def __getattr__(self, name):
        return getattr(tensorflow(), name)


tf = _LazyTensorFlow()


_TENSORFLOW_PACKAGES = ("tensorflow", "tensorflow_datasets", "tensorflow_text", "tf_keras")


def block_tensorflow():
    """Makes TensorFlow (and the packages built on it: tensorflow_datasets,
    tensorflow_text, tf_keras) unimportable in this process, as if not
    installed (keras_hub still imports; its samplers run on any backend, its
    tokenizers need tensorflow_text). For JAX or torch processes on a machine that has TensorFlow:
    Keras imports it opportunistically (``keras.utils.set_random_seed`` seeds
    it too), and a TensorFlow that initialises its GPU runtime takes the
    memory JAX expects to own. Raises BackendError if it is already imported."""
    if sys.modules.get("tensorflow") is not None:
        raise BackendError("block_tensorflow(): TensorFlow is already imported in this "
                           "process; call it before anything imports TensorFlow")
    for name in _TENSORFLOW_PACKAGES:
        # Python's own marker for "not importable": `import` raises
        # ModuleNotFoundError, importlib.util.find_spec returns None.
        sys.modules[name] = None


def require_tensorflow_backend(what):
    """Raises BackendError unless TensorFlow is the Keras backend."""
    if backend() != "tensorflow":
        raise BackendError(
            f"{what} needs the TensorFlow Keras backend; KERAS_BACKEND is {backend()!r}. "
            "Run with KERAS_BACKEND=tensorflow (the training and export doors are "
            "TensorFlow by nature).")


def is_tf_dataset(x):
    """True for a ``tf.data.Dataset``, without importing TensorFlow (no dataset
    can exist unless it was imported already)."""
    tf_module = sys.modules.get("tensorflow")
    return tf_module is not None and isinstance(x, tf_module.data.Dataset)


# ---------------------------------------------------------------- replicas

def _replica_context():
    if backend() != "tensorflow":
        return None
    return tf.distribute.get_replica_context()


def num_replicas():
    """Replicas whose gradients an optimizer sums (tf.distribute); 1 elsewhere."""
    if backend() != "tensorflow":
        return 1
    replica = _replica_context()
    if replica is None:
        return tf.distribute.get_strategy().num_replicas_in_sync
    return replica.num_replicas_in_sync


def all_reduce(kind, values):
    """``"sum"`` or ``"mean"`` over tf.distribute replicas; the identity elsewhere
    and outside a replica context."""
    replica = _replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return values
    return replica.all_reduce(kind, values)


def assign_all(variables, values):
    """``variable.assign(value)`` for each pair, also under tf.distribute, where
    mirrored variables are written from the cross-replica context with each
    device's copy taking that device's value (all replicas computed the same)."""
    if backend() != "tensorflow":
        for var, value in zip(variables, values):
            var.assign(keras.ops.cast(value, var.dtype))
        return

    def update(strategy, tf_vars, values):
        for var, value in zip(tf_vars, values):
            strategy.extended.update(var, lambda v, x: v.assign(keras.ops.cast(x, v.dtype)),
                                     args=(value,), group=False)

    tf_vars = [getattr(v, "value", v) for v in variables]
    replica = tf.distribute.get_replica_context()
    if replica is None:  # already cross-replica (eager call outside strategy.run)
        update(tf.distribute.get_strategy(), tf_vars, values)
    else:
        replica.merge_call(update, args=(tf_vars, values))


def snapshot(variable):
    """The variable's value now, unaffected by later assigns (TF: a read ordered
    before them; torch: a copy, since assigns are in place)."""
    return keras.ops.copy(getattr(variable, "value", variable))


# ---------------------------------------------------------------- gradients

def value_and_gradients(fn, variables):
    """``fn()`` -> (loss, aux); returns ``(loss, aux), grads`` of ``loss`` with
    respect to ``variables``. Variable updates ``fn`` makes (BatchNorm moving
    statistics, seed generators) take effect, on every backend."""
    name = backend()
    if name == "tensorflow":
        with tf.GradientTape() as tape:
            loss, aux = fn()
        return (loss, aux), tape.gradient(loss, variables)
    if name == "jax":
        return _jax_value_and_gradients(fn, variables)
    if name == "torch":
        for v in variables:
            v.value.grad = None
        loss, aux = fn()
        loss.backward()
        return (loss, aux), [v.value.grad for v in variables]
    raise BackendError(f"keras_zoo's custom train steps do not support the {name!r} backend")


def _jax_value_and_gradients(fn, variables):
    import jax

    if not _STEP_SCOPES:
        raise BackendError("value_and_gradients on JAX runs inside stateful_step (a "
                           "train_step's StatelessScope); it was called outside one")
    scope = _STEP_SCOPES[-1]
    ids = [id(v) for v in variables]

    def loss_of(values):
        # A scope that starts from the step's current values, with `variables`
        # replaced by the values JAX differentiates with respect to.
        inner = keras.StatelessScope()
        inner.state_mapping = {**scope.state_mapping, **dict(zip(ids, values))}
        with inner:
            loss, aux = fn()
        updates = {k: v for k, v in inner.state_mapping.items()
                   if k not in ids and v is not scope.state_mapping.get(k)}
        return loss, (aux, updates)

    values = [scope.state_mapping[i] for i in ids]
    (loss, (aux, updates)), grads = jax.value_and_grad(loss_of, has_aux=True)(values)
    scope.state_mapping.update(updates)
    return (loss, aux), grads


_STEP_SCOPES = []  # the StatelessScope of each running stateful_step (JAX)


def stateful_step(model, step_fn, *args):
    """Runs a ``train_step``/``test_step`` written statefully (reads variables,
    ``assign``s them, calls ``value_and_gradients`` and ``optimizer.apply``) on
    every backend. TensorFlow and torch call ``step(data)``: ``step_fn(data)``
    runs as is. Keras' JAX trainer calls ``step(state, data)`` and compiles it as
    a pure function: ``step_fn(data)`` then runs inside a ``StatelessScope``
    holding ``state``, and the new state is read back from the scope."""
    if len(args) == 1:
        return step_fn(args[0])
    state, data = args
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:  # train: + optimizer variables
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    mapping = [(v, x) for variables, values in zip(groups, state)
               for v, x in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        _STEP_SCOPES.append(scope)
        try:
            logs = step_fn(data)
        finally:
            _STEP_SCOPES.pop()
    new_state = tuple([scope.get_current_value(v) for v in variables] for variables in groups)
    return logs, new_state

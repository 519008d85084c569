"""Adam and AdamW with TensorFlow's fused update kernel.

Keras 3's Adam writes the update as ~10 separate ops per variable (two
moment updates, the bias-corrected step, three assigns); on CPU each one is
a kernel launch and a full pass over the variable's memory, which costs
~150 ms of CPU per ViT-S/16 step (22 M parameters, 152 variables). TF's
``ResourceApplyAdam`` does the same arithmetic in one kernel and one pass,
on CPU, GPU and TPU (it has an XLA lowering), the way torch's fused AdamW
does. The arithmetic is Keras', term for term:

    m <- m + (g - m) (1 - beta_1)
    v <- v + (g^2 - v) (1 - beta_2)
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

so these classes are drop-in replacements (same config, same slot
variables, checkpoints interchangeable with ``keras.optimizers.Adam(W)``).
AdamW's decoupled weight decay, ``w <- w - lr * wd * w``, is applied by the
Keras base class before the update, as in ``keras.optimizers.AdamW``.

Keras' own update is used where the fused kernel does not apply: AMSGrad,
sparse (``IndexedSlices``) gradients, and backends other than TensorFlow.

``AdamWeightDecay`` is google-research/bert's ``AdamWeightDecayOptimizer``
(``optimization.py``): the same moments, no bias correction, epsilon 1e-6,
decay ``lr * wd * w`` (biases and LayerNorm excluded by the caller).
"""

import keras


class _FusedAdamUpdate:
    bias_correction = True

    def _unfused_update(self, gradient, variable, learning_rate):
        return super().update_step(gradient, variable, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow":  # JAX, torch: Keras' update
            return self._unfused_update(gradient, variable, learning_rate)
        import tensorflow as tf

        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or \
                not hasattr(variable, "handle"):
            return self._unfused_update(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        # beta powers 0: lr_t = lr * sqrt(1 - 0) / (1 - 0) = lr, no bias correction
        powers = (tf.pow(beta_1, step), tf.pow(beta_2, step)) if self.bias_correction \
            else (tf.zeros((), dtype), tf.zeros((), dtype))
        # Under tf.distribute this runs inside ``strategy.extended.update``,
        # where a mirrored slot variable's ``handle`` is this replica's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=powers[0],
            beta2_power=powers[1],
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
            use_locking=False,
        )


@keras.saving.register_keras_serializable(package="keras_zoo")
class Adam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with TF's fused update kernel (see module doc)."""


@keras.saving.register_keras_serializable(package="keras_zoo")
class AdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with TF's fused update kernel (see module doc)."""


@keras.saving.register_keras_serializable(package="keras_zoo")
class AdamWeightDecay(AdamW):
    """google-research/bert's ``AdamWeightDecayOptimizer`` as a Keras optimizer:

        m <- beta_1 m + (1 - beta_1) g;   v <- beta_2 v + (1 - beta_2) g^2
        w <- w - lr * (m / (sqrt(v) + epsilon) + weight_decay * w)

    no bias correction (unlike Adam/AdamW), epsilon 1e-6, weight decay 0.01.
    The official excludes "LayerNorm", "layer_norm" and "bias" from the decay:
    call ``exclude_from_weight_decay`` with the model's biases and norm
    weights (the trainer passes ``model.no_weight_decay_variables()``, which
    are exactly those for BERT). Pair it with ``LinearDecayWithWarmup`` and
    ``global_clipnorm=1.0`` for the official ``create_optimizer``.
    """

    bias_correction = False

    def __init__(self, learning_rate=0.001, weight_decay=0.01, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-6, **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("AdamWeightDecay has no AMSGrad variant (the official has none)")
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, **kwargs)

    def _unfused_update(self, gradient, variable, learning_rate):
        from keras import ops

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gradient = tf.convert_to_tensor(gradient)  # IndexedSlices: dense, as the official
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, lr),
                                             ops.add(ops.sqrt(v), self.epsilon)))

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
"""

import keras


class _FusedAdamUpdate:
    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow":  # JAX, torch: Keras' update
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or \
                not hasattr(variable, "handle"):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        # Under tf.distribute this runs inside ``strategy.extended.update``,
        # where a mirrored slot variable's ``handle`` is this replica's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
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

"""Learning-rate schedules the trainer offers besides warmup + cosine."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_zoo")
class InverseSqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The Transformer paper's schedule (Vaswani et al. 2017, eq. 3):

        lr(step) = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

    written as ``peak * min(step / warmup, sqrt(warmup / step))`` with
    ``peak = d_model^-0.5 * warmup^-0.5`` (7.0e-4 for d_model 512 and 4000
    warm-up steps): linear warm-up to ``peak``, then decay as 1/sqrt(step).
    ``step`` counts from 1 (the optimizer's iteration + 1), as in the paper.
    """

    def __init__(self, peak_learning_rate, warmup_steps=4000):
        if warmup_steps < 1:
            raise ValueError(f"the inverse-sqrt schedule needs warmup_steps >= 1, got "
                             f"{warmup_steps}")
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(self.warmup_steps, "float32")
        return self.peak_learning_rate * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    @staticmethod
    def paper_peak(d_model, warmup_steps=4000):
        """d_model^-0.5 * warmup^-0.5: the peak the paper's formula reaches."""
        return d_model ** -0.5 * warmup_steps ** -0.5

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="keras_zoo")
class LinearDecayWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """google-research/bert ``optimization.create_optimizer``'s schedule:

        lr(step) = peak * step / warmup                 step < warmup
                   peak * (1 - min(step, total) / total)  otherwise

    (``tf.train.polynomial_decay(peak, step, total, 0.0, power=1.0)`` counted
    from step 0, replaced by the linear warm-up while step < warmup: after
    warm-up the rate is already peak * (1 - warmup / total), and it reaches 0
    at ``total``). ``step`` is the optimizer's iteration before the update
    (the official global_step), so the first update has rate 0 when
    ``warmup`` > 0.
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0):
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(f"the linear schedule needs total_steps >= 1 and warmup_steps "
                             f">= 0, got {total_steps} and {warmup_steps}")
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = ops.cast(self.total_steps, "float32")
        decayed = self.peak_learning_rate * (1.0 - ops.minimum(step, total) / total)
        if not self.warmup_steps:
            return decayed
        warm = self.peak_learning_rate * step / ops.cast(self.warmup_steps, "float32")
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

"""Keras's Adam with each variable's update as TensorFlow's one fused ``ResourceApplyAdam`` op.

tf-keras's ``Adam.update_step`` builds about twenty graph ops per variable (casts, powers, the
moment updates, the step), each through TensorFlow's Python op machinery. For MobileNetV2's 262
variables that is over half of tracing the train step, and it is traced again for every compile
(the model check, fit, the fine-tune phase): the first step of the backbone took 15-23 s against
5-7 s fused on this machine (``bench/train_step_trace.py --compare adam``,
docs/benchmarks.md#fused-adam).

:func:`fuse_adam` makes one optimizer instance compute the step's shared scalars (learning rate,
``beta ** step``) once per ``apply_gradients`` and apply each dense gradient with
``ResourceApplyAdam``: the kernel Keras's legacy Adam used, the same update
(``lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) * m / (sqrt(v) + epsilon)``) up to float
rounding. The instance stays a plain ``tf.keras.optimizers.Adam``: the same ``m`` and ``v``
slots, config and ``.keras`` file, so checkpoints load either way and users load the model
without this module. Sparse gradients, ``amsgrad``, ``adaptive_epsilon``, ``jit_compile`` and
Adam's subclasses keep Keras's own update.

Relies on tf-keras's private ``Optimizer._distributed_apply_gradients_fn`` and the slot lists
``_momentums`` / ``_velocities`` (tf-keras 2.19); tests/training/test_fused_adam.py checks both
on an upgrade.
"""

from __future__ import annotations


def fuse_adam(optimizer):
    """Give ``optimizer`` the fused update when it is exactly Keras's dense Adam; return it.

    A loss-scale optimizer (mixed precision) is fused through its inner optimizer. Anything else
    is returned unchanged.
    """
    import tensorflow as tf

    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if (
        type(inner) is not tf.keras.optimizers.Adam
        or inner.amsgrad
        or getattr(inner, "adaptive_epsilon", False)
        or inner.jit_compile
        or getattr(inner, "_fused_adam", False)
    ):
        return optimizer
    keras_apply = inner._distributed_apply_gradients_fn
    keras_step = inner.update_step
    scalars: dict = {}  # dtype -> this apply_gradients call's shared scalars

    def step_scalars(dtype):
        local_step = tf.cast(inner.iterations + 1, dtype)
        beta_1 = tf.cast(inner.beta_1, dtype)
        beta_2 = tf.cast(inner.beta_2, dtype)
        return {
            "lr": tf.cast(inner.learning_rate, dtype),
            "beta1_power": tf.pow(beta_1, local_step),
            "beta2_power": tf.pow(beta_2, local_step),
            "beta1": beta_1,
            "beta2": beta_2,
            "epsilon": tf.cast(inner.epsilon, dtype),
        }

    def apply_gradients_fn(distribution, grads_and_vars, **kwargs):
        grads_and_vars = list(grads_and_vars)
        # In the merge (cross-replica) context, before any variable's update reads them: the same
        # iteration count every variable's update would have read.
        for dtype in {var.dtype for _, var in grads_and_vars}:
            scalars[dtype] = step_scalars(dtype)
        try:
            return keras_apply(distribution, grads_and_vars, **kwargs)
        finally:
            scalars.clear()

    def update_step(gradient, variable):
        shared = scalars.get(variable.dtype)
        if shared is None or isinstance(gradient, tf.IndexedSlices):
            return keras_step(gradient, variable)
        index = inner._index_dict[inner._var_key(variable)]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=inner._momentums[index].handle,
            v=inner._velocities[index].handle,
            grad=gradient,
            **shared,
        )

    inner._distributed_apply_gradients_fn = apply_gradients_fn
    inner.update_step = update_step
    inner._fused_adam = True
    return optimizer

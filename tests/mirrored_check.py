"""Run as a script: one device vs MirroredStrategy on two logical CPUs.

Two logical devices must be configured before TensorFlow starts: tests/conftest.py
does it for the pytest process, which runs this file with ``run_check``; run alone,
the file configures them itself. It prints one JSON line of measurements.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
if not tf.config.get_logical_device_configuration(cpu):  # set already under pytest (conftest)
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfascl import runs  # noqa: E402
from tfascl.distribute import fit_loop  # noqa: E402

# Two steps, not three: on this data the third step is ill-conditioned. A 1e-7 relative
# perturbation of the initial weights moves one device's weights after 3 steps by 4.7e-3
# (after 2 steps by 1.2e-6), measured on a 2-core AMD EPYC with AVX-512, where the rounding
# of different batch shapes (16 images on one device, 8 per replica) alone gave 4.7e-3 after
# 3 steps with oneDNN's custom ops on and 5.0e-3 with them off: the comparison then measured
# that amplification, not the strategy. After 2 steps the runs agree to ~1e-6 on either
# setting, and a lost 1/R (doubled updates) still moves the weights by ~1e-2.
GLOBAL_BATCH, STEPS = 16, 2
METHOD = sys.argv[1] if len(sys.argv) > 1 else "ascl"


def spec(norm):
    # Split BN over 2 groups on one device computes what per-replica BN computes
    # on 2 replicas, so the two runs are comparable step for step.
    return runs.RunSpec(
        method=METHOD,
        backbone_width=4,
        image_size=16,
        norm=norm,
        num_splits=2,
        projector_dims=(16, 8),
        queue_size=64,
        batch_size=GLOBAL_BATCH,
        total_steps=STEPS,
    )


def data():
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * STEPS
    views = tuple(rng.random((n, 16, 16, 3), dtype=np.float32) for _ in range(2))
    labels = np.arange(n) % 5
    return tf.data.Dataset.from_tensor_slices((views, labels)).batch(GLOBAL_BATCH)


def train(strategy, norm, loop, **overrides):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        # Shuffled keys would draw a different permutation in each run.
        if METHOD == "ascl":
            overrides["shuffle_keys"] = False
        model = spec(norm).build_model(**overrides)
        model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    model.set_weights(initial_weights)
    if loop:
        history = fit_loop(
            model, data(), epochs=1, steps_per_epoch=STEPS, verbose=0, strategy=strategy
        )
    else:
        history = model.fit(data(), epochs=1, verbose=0)
    return model, history.history["loss"][-1]


def replicas(variable):
    value = variable.value
    return [v.numpy() for v in getattr(value, "values", (value,))]


keras.utils.set_random_seed(0)
initial_weights = spec("split").build_model().get_weights()

single, single_loss = train(tf.distribute.get_strategy(), "split", loop=False)
# Under pytest, the session's one strategy (``run_check``): each new MirroredStrategy
# in a process numbers its collectives from the same keys, and sync BN's collectives of
# two strategies then collide.
mirrored_strategy = globals().get("STRATEGY") or tf.distribute.MirroredStrategy(
    ["/cpu:0", "/cpu:1"]
)
mirrored, mirrored_loss = train(mirrored_strategy, "batch", loop=False)
# fit_loop and per-replica XLA are checked on the queue method only (to keep the test short).
looped, looped_loss = (
    train(mirrored_strategy, "batch", loop=True) if METHOD == "ascl" else (None, None)
)
jit_loss = None
if METHOD == "ascl":
    _, jit_loss = train(mirrored_strategy, "batch", loop=False, replica_jit_compile=True)

result = {
    "replicas": mirrored_strategy.num_replicas_in_sync,
    "single_loss": single_loss,
    "mirrored_loss": mirrored_loss,
    "looped_loss": looped_loss,
    "replica_jit_loss": jit_loss,
    # Trainable weights of both encoders (BN moving statistics are per replica).
    "weights_vs_single_max_diff": max(
        float(np.abs(a.numpy() - b.numpy()).max())
        for a, b in zip(
            single.online_weights + single.momentum_pairs[0],
            mirrored.online_weights + mirrored.momentum_pairs[0],
        )
    ),
}
if hasattr(mirrored, "queue"):
    queue_copies = replicas(mirrored.queue.keys)
    result.update(
        queue_copies=len(queue_copies),
        queue_copies_max_diff=float(np.abs(queue_copies[0] - queue_copies[1]).max()),
        pointer=[int(p) for p in replicas(mirrored.queue.pointer)],
        queue_vs_single_max_diff=float(np.abs(single.queue.keys.numpy() - queue_copies[0]).max()),
        queue_labels_equal=bool(
            (single.queue.labels.numpy() == replicas(mirrored.queue.labels)[0]).all()
        ),
        loop_vs_fit_queue_max_diff=float(
            np.abs(replicas(looped.queue.keys)[0] - queue_copies[0]).max()
        ),
    )
print(json.dumps(result))

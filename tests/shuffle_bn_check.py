"""Run as a script: MoCo's shuffle BN across two logical CPUs against one device.

Two logical devices must be configured before TensorFlow starts: tests/conftest.py
does it for the pytest process, which runs this file with ``run_check``; run alone,
the file configures them itself. It prints one JSON line of measurements.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
if not tf.config.get_logical_device_configuration(cpu):  # set already under pytest (conftest)
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfascl import runs  # noqa: E402

GLOBAL_BATCH, STEPS, SIZE = 16, 3, 16
HALF = GLOBAL_BATCH // 2


def spec(norm):
    # Per-replica BN over the 8 images of a replica normalises what split BN over two
    # groups of 8 normalises on one device.
    return runs.RunSpec(
        method="ascl",
        backbone_width=4,
        image_size=SIZE,
        norm=norm,
        num_splits=2,
        projector_dims=(16, 8),
        queue_size=64,
        batch_size=GLOBAL_BATCH,
        total_steps=STEPS,
    )


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


rng = np.random.default_rng(0)
n = GLOBAL_BATCH * STEPS
strong_all, weak_all = (rng.random((n, SIZE, SIZE, 3), dtype=np.float32) for _ in range(2))
labels_all = np.arange(n) % 5
weak = weak_all[:GLOBAL_BATCH]

keras.utils.set_random_seed(0)
initial_weights = spec("split").build_model().get_weights()
# Under pytest, the session's one strategy (``run_check``): each new MirroredStrategy
# in a process numbers its collectives from the same keys, and sync BN's collectives of
# two strategies then collide.
strategy = globals().get("STRATEGY") or tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = spec("shuffle").build_model()
mirrored.set_weights(initial_weights)
per_replica = strategy.experimental_distribute_values_from_function(
    lambda context: weak[context.replica_id_in_sync_group * HALF :][:HALF]
)


def on_replicas(function):
    """``function`` on each replica's half of ``weak``; the halves concatenated."""
    out = tf.function(lambda x: strategy.run(function, args=(x,)))(per_replica)
    return np.concatenate([v.numpy() for v in strategy.experimental_local_results(out)])


def shuffled_keys(permutation):
    mirrored.key_permutation = lambda size, salt=0: tf.constant(permutation, tf.int32)
    try:
        return on_replicas(mirrored.encode_key)
    finally:
        del mirrored.key_permutation


identity = np.arange(GLOBAL_BATCH)
# Every replica's share mixes images of both replicas.
fixed = np.random.default_rng(1).permutation(GLOBAL_BATCH)
per_replica_bn = on_replicas(mirrored.unshuffled_key)
identity_keys = shuffled_keys(identity)
fixed_keys = shuffled_keys(fixed)

# One device, the same groups: split BN over halves of the batch in the order `fixed`.
single = spec("split").build_model()
single.set_weights(initial_weights)
grouped = single.unshuffled_key(tf.constant(weak[fixed])).numpy()
single_fixed = grouped[np.argsort(fixed)]


def train(strategy_, norm, **overrides):
    with strategy_.scope():
        model = spec(norm).build_model(**overrides)
        model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    model.set_weights(initial_weights)
    data = tf.data.Dataset.from_tensor_slices(((strong_all, weak_all), labels_all))
    history = model.fit(data.batch(GLOBAL_BATCH), epochs=1, verbose=0)
    return model, history.history["loss"][-1]


def replicas(variable):
    value = variable.value
    return [v.numpy() for v in getattr(value, "values", (value,))]


# Training: shuffle BN on 2 replicas against split BN (2 groups) with the same
# step-seeded permutation on one device.
one_device, one_device_loss = train(tf.distribute.get_strategy(), "split")
shuffled, shuffled_loss = train(strategy, "shuffle")
_, jit_loss = train(strategy, "shuffle", replica_jit_compile=True)
queue_copies = replicas(shuffled.queue.keys)

print(
    json.dumps(
        {
            "replicas": strategy.num_replicas_in_sync,
            "shuffle_keys": bool(mirrored.shuffle_keys),
            "identity_vs_per_replica_bn": max_diff(identity_keys, per_replica_bn),
            "fixed_vs_one_device_groups": max_diff(fixed_keys, single_fixed),
            "fixed_vs_per_replica_bn": max_diff(fixed_keys, per_replica_bn),
            "key_norms": [float(v) for v in np.linalg.norm(fixed_keys, axis=1)[:2]],
            "one_device_loss": one_device_loss,
            "shuffled_loss": shuffled_loss,
            "replica_jit_loss": jit_loss,
            "weights_max_diff": max(
                max_diff(a.numpy(), b.numpy())
                for a, b in zip(
                    one_device.online_weights + one_device.momentum_pairs[0],
                    shuffled.online_weights + shuffled.momentum_pairs[0],
                )
            ),
            "queue_copies_max_diff": max_diff(queue_copies[0], queue_copies[1]),
            "queue_vs_one_device": max_diff(queue_copies[0], one_device.queue.keys.numpy()),
            "pointer": [int(p) for p in replicas(shuffled.queue.pointer)],
        }
    )
)

"""Writes an image folder's splits as TFRecord shards that tfascl-train reads with --dataset.

    python -m benchmarks.make_tfrecords /data/cifar10 /data/cifar10_tfrecords --shards=16
    python -m benchmarks.make_tfrecords /data/imagenet /data/imagenet_tfrecords \
        --splits=train,val --records_per_shard=1250
    python -m benchmarks.make_tfrecords --index_only /data/model_garden_imagenet \
        --splits=train,validation

Each image file's bytes are stored as they are, with TF Model Garden's features
(`image/encoded`, `image/format`, `image/height`, `image/width`, `image/filename`,
`image/class/label`, `image/class/text`), in a seeded random order dealt round-robin to the
shards, and the record counts go into the index tfascl reads (`tfascl.data.tfrecord`).
`--layout=flat` (default) names the shards as Model Garden's ImageNet ones,
`<out>/train-00000-of-00016`; `--layout=folders` writes `<out>/train/*.tfrecord`.
`--index_only` counts the records of shards written by something else (Model Garden, TFDS)
and writes their index; tfascl-train also does it by itself on first use.
"""

from tfascl.data.tfrecord_writer import main

if __name__ == "__main__":
    main()

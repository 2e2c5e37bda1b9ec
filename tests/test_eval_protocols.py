"""The reference code's evaluation choices: crop scale, per-dataset protocol, native size."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_spec

from tfascl import runs
from tfascl.data import ImageSet
from tfascl.evaluation import LinearConfig, embed_images, from_model_dir
from tfascl.evaluation.datasets import DATASET_PROTOCOLS, dataset_protocol, eval_image_size
from tfascl.evaluation.linear_batches import linear_crop_params

SIZE = 16


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("cifar10", "ascl_code"),
        ("stl10", "stl10"),
        ("data/stl10_folder/", "stl10"),
        ("imagenet2012", "imagenet"),
        ("/data/tiny-imagenet-200", "ascl_code"),  # Tiny ImageNet is evaluated as CIFAR
    ],
)
def test_each_dataset_gets_its_reference_protocol(name, protocol):
    assert dataset_protocol(name).name == protocol


def test_linear_defaults_come_from_the_dataset_unless_given():
    imagenet = LinearConfig().for_dataset(DATASET_PROTOCOLS["imagenet"])
    # MoCo main_lincls.py: lr 30, plain momentum, steps at 60/80.
    assert (imagenet.base_lr, imagenet.uses_nesterov, imagenet.milestones) == (
        30.0,
        False,
        (60, 80),
    )
    assert imagenet.settings()["optimizer"] == "SGD, momentum 0.9, weight decay 0.0"
    cifar = LinearConfig().for_dataset(DATASET_PROTOCOLS["ascl_code"])
    assert (cifar.base_lr, cifar.uses_nesterov) == (10.0, True)  # ASCL code main.py
    given = LinearConfig(learning_rate=0.5, nesterov=True).for_dataset(
        DATASET_PROTOCOLS["imagenet"]
    )
    assert (given.base_lr, given.uses_nesterov) == (0.5, True)
    cosine = LinearConfig(schedule="cosine").for_dataset(DATASET_PROTOCOLS["imagenet"])
    assert cosine.base_lr == 1.0
    with pytest.raises(ValueError, match="crop_scale"):
        LinearConfig(crop_scale=(0.5, 0.2))


def test_linear_crops_cover_torchvisions_default_scale():
    n, side = 4000, 32.0
    boxes, flip = linear_crop_params(tf.constant(n), tf.constant(side), tf.constant(side), [3, 4])
    boxes = boxes.numpy()
    area = boxes[:, 2] * boxes[:, 3] / side**2
    ratio = boxes[:, 3] / boxes[:, 2]
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5
    # Uniform area in [0.08, 1] (the weak view's 0.2 floor would leave none below 0.2).
    assert np.mean(area < 0.2) == pytest.approx(0.12 / 0.92, abs=0.03)
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert 0.45 < flip.numpy().mean() < 0.55


def test_native_size_evaluation_embeds_without_resizing(tmp_path):
    spec = tiny_spec(image_size=SIZE, dataset="stl10", num_classes=3)
    runs.save_spec(spec, tmp_path)
    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.checkpoint().save(str(runs.checkpoint_dir(tmp_path) / "ckpt"))
    encoder = from_model_dir(tmp_path)
    assert encoder.any_size and encoder.image_size == SIZE

    native = 2 * SIZE  # e.g. STL-10's 96 px images for a model trained on 64 px crops
    images = np.random.default_rng(0).integers(0, 256, (6, native, native, 3), dtype=np.uint8)
    data = ImageSet(images, np.arange(6) % 3, ["a", "b", "c"], spec.mean, spec.std, "stl10")
    assert eval_image_size(DATASET_PROTOCOLS["stl10"], encoder, data) == (native, None)
    assert eval_image_size(DATASET_PROTOCOLS["ascl_code"], encoder, data) == (SIZE, None)

    got = embed_images(encoder, images, batch_size=4, size=native)
    # The trained backbone's own weights on the whole image: ToTensor + Normalize only.
    pixels = (images / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    want = model.backbone.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(encoder.backbone.get_weights(), want))
    direct = encoder.backbone(pixels.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)
    resized = embed_images(encoder, images, batch_size=4)  # the model's size: different
    assert np.abs(resized - got).max() > 1e-3


def test_check_labels_refuses_unlabelled_splits_for_memory_and_stream_alike():
    from tfascl.evaluation import EvalInputError
    from tfascl.evaluation.datasets import check_labels

    check_labels("stl10", "train", True, np.array([0, 3, 9]))
    check_labels("stl10", "train", True, None)  # a TFDS stream: checked as records are read
    with pytest.raises(EvalInputError, match="'unlabelled' has no labels"):
        check_labels("stl10", "unlabelled", False, None)
    with pytest.raises(EvalInputError, match=r"holds unlabelled images \(label -1\)"):
        check_labels("stl10", "train+unlabelled", True, np.array([0, -1, 2]))


# Every public name of protocols.py before it was split by protocol (importers outside
# tfascl.evaluation, e.g. tfascl.train's monitor_image_size, still use that module).
OLD_PROTOCOLS_NAMES = {
    "datasets": [
        "DATASET_PROTOCOLS", "DatasetProtocol", "check_labelled_source", "check_labels",
        "dataset_protocol", "embed_images", "embed_split", "eval_image_size", "image_shape",
        "load_labelled", "monitor_image_size", "num_classes_of", "open_labelled",
        "pixel_batches", "resize_note", "timed",
    ],
    "knn": ["knn_protocol"],
    "linear": ["DEFAULT_LINEAR_LR", "LINEAR_SCHEDULES", "LinearConfig", "build_classifier",
               "linear_protocol"],
    "linear_batches": [
        "LINEAR_CROP_SCALE", "LINEAR_DRAWS", "linear_augment", "linear_crop_params",
        "linear_draws", "linear_epoch_order", "streamed_linear_batches",
        "torchvision_crop_boxes",
    ],
    "neighbors": ["NEIGHBORS_FILE", "STREAMED_NEIGHBORS_ERROR", "nearest_neighbors",
                  "neighbors_protocol"],
}  # fmt: skip


def test_the_old_protocols_module_names_the_moved_objects():
    import importlib

    from tfascl.evaluation import protocols

    for module, names in OLD_PROTOCOLS_NAMES.items():
        home = importlib.import_module(f"tfascl.evaluation.{module}")
        for name in names:
            assert getattr(protocols, name) is getattr(home, name), f"{module}.{name}"
    listed = {name for names in OLD_PROTOCOLS_NAMES.values() for name in names}
    assert set(protocols.__all__) == listed
    # The package's lazy names come from the new modules, and are the same objects.
    from tfascl import evaluation

    assert evaluation.knn_protocol is protocols.knn_protocol
    assert evaluation.LinearConfig is protocols.LinearConfig
    assert evaluation.embed_images is protocols.embed_images

"""The notebook user's Keras calls: save/load, weights files, ModelCheckpoint,
BackupAndRestore and export, on the README's flow at a tiny size (digits, 16 px,
ResNet-18 of width 4, ASCL)."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfascl
from tfascl import export, runs
from tfascl.data import TwoViews, eval_dataset, load_images, pretrain_dataset

SIZE, WIDTH, BATCH, QUEUE = 16, 4, 16, 48


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises at the start of batch ``batch`` of epoch ``epoch`` (a crash mid-epoch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt(f"epoch {self.epoch} batch {batch}")


class EpochsRun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def digits():
    train = load_images("digits", "train", max_examples=4 * BATCH, image_size=SIZE)
    test = load_images("digits", "test", max_examples=40, image_size=SIZE)
    return train, test


def notebook_model(train, seed=0, **options):
    """The README's model at a tiny size (queue of 3 batches, so the pointer is not 0)."""
    keras.utils.set_random_seed(seed)
    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=WIDTH, num_splits=2)
    model = tfascl.build_model(
        "ascl",
        backbone,
        queue_size=QUEUE,
        batch_size=BATCH,
        projector_dims=(16, 8),
        num_splits=2,
        normalization=(train.mean, train.std),
        **options,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
    return model


@pytest.fixture(scope="module")
def trained(digits):
    """One epoch (4 steps) of the README's fit; tests that step it further say so."""
    train, _ = digits
    model = notebook_model(train)
    model.fit(pretrain_dataset(train, BATCH, SIZE, jit_compile=False), epochs=1, verbose=0)
    assert int(model.queue.pointer.numpy()) == 4 * BATCH % QUEUE != 0
    return model


def fixed_batches(train, count=2):
    """``count`` augmented batches as arrays: the same input for every fit."""
    batches = list(pretrain_dataset(train, BATCH, SIZE, jit_compile=False).take(count))
    strong = np.concatenate([b[0][0].numpy() for b in batches])
    weak = np.concatenate([b[0][1].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    return (strong, weak), labels


def assert_same_state(got, want, atol=0.0):
    assert [v.path for v in got.weights] == [v.path for v in want.weights]
    for a, b in zip(got.weights, want.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, err_msg=a.path)
    assert len(got.optimizer.variables) == len(want.optimizer.variables)
    for a, b in zip(got.optimizer.variables, want.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, err_msg=a.path)


def next_step(model, batch, seed=5):
    """One train step from a fresh train function and random state (shuffle BN draws)."""
    keras.utils.set_random_seed(seed)
    model.make_train_function(force=True)
    return model.train_on_batch(*batch, return_dict=True)


def test_built_weights_file_holds_encoders_queue_labels_pointer(trained, digits, tmp_path):
    assert trained.built
    saved = {id(v) for v in trained.weights}
    for part in ("backbone", "projector", "key_backbone", "key_projector", "queue"):
        variables = getattr(trained, part).weights
        assert variables and {id(v) for v in variables} <= saved, part
    assert {v.path for v in trained.queue.weights} == {
        "queue/keys",
        "queue/labels",
        "queue/pointer",
    }
    # The key encoder is a second set of weights, not the online one.
    assert not {id(v) for v in trained.key_backbone.weights} & {
        id(v) for v in trained.backbone.weights
    }
    # The optimizer trains the online weights and nothing else.
    assert len(trained.optimizer.variables) == 2 + len(trained.online_weights)

    trained.save_weights(tmp_path / "m.weights.h5")
    other = notebook_model(digits[0], seed=1)  # other initial weights, empty queue
    assert int(other.queue.pointer.numpy()) == 0
    other.load_weights(tmp_path / "m.weights.h5")
    assert_same_state(other, trained)
    assert (other.queue.labels.numpy() >= 0).sum() == QUEUE


def test_keras_file_round_trip_continues_training(trained, digits, tmp_path):
    # This test steps `trained` once more.
    trained.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded) is tfascl.MomentumContrast
    # As JSON: tuples of the original are lists after the file.
    assert json.dumps(loaded.get_config()) == json.dumps(trained.get_config())
    assert loaded.normalization == trained.normalization
    assert int(loaded.optimizer.iterations.numpy()) == 4
    assert_same_state(loaded, trained)

    batch = fixed_batches(digits[0], count=1)
    want, got = next_step(trained, batch), next_step(loaded, batch)
    assert np.isfinite(want["loss"])
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    # SGD's momentum slots came back too: the step moves the weights identically.
    assert_same_state(loaded, trained, atol=1e-6)
    assert int(loaded.queue.pointer.numpy()) == 5 * BATCH % QUEUE


def test_byol_with_device_views_round_trips(digits, tmp_path):
    """BYOL+ASCL: predictor, cosine momentum and the TwoViews layer (with its seed state)."""
    train, _ = digits
    keras.utils.set_random_seed(0)
    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=WIDTH, num_splits=2)
    views = TwoViews(SIZE, train.mean, train.std, seed=3)
    model = tfascl.build_model(
        "byol_ascl", backbone, projector_dims=(16, 8), num_splits=2, total_steps=8, views=views
    )
    assert model.normalization == (train.mean, train.std)  # taken from the views
    # Eager: a few steps cost less than tracing the augmentation and the step.
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), run_eagerly=True)
    raw = pretrain_dataset(train, BATCH, SIZE, augment_on="device")  # uint8 images, labels
    model.fit(raw.take(2), epochs=1, verbose=0)
    model.save(tmp_path / "byol.keras")
    loaded = keras.models.load_model(tmp_path / "byol.keras")
    loaded.run_eagerly = True
    assert type(loaded) is tfascl.BYOL and isinstance(loaded.views, TwoViews)
    assert loaded.views.get_config() == views.get_config()
    assert_same_state(loaded, model)
    # The views' random state came back (Keras files leave generator states out).
    state = views.seed_generator.state.numpy()
    assert state[1] > 0  # it advanced during fit
    np.testing.assert_array_equal(loaded.views.seed_generator.state.numpy(), state)

    images, labels = next(iter(raw))
    want = next_step(model, (images, labels))
    got = next_step(loaded, (images, labels))
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["momentum"], want["momentum"], rtol=1e-7)
    assert_same_state(loaded, model, atol=1e-6)


def test_model_checkpoint_and_backup_and_restore_in_fit(digits, tmp_path):
    train, _ = digits
    x, y = fixed_batches(train)  # 2 steps an epoch
    # Deterministic steps (no key shuffle draws), so an interrupted and resumed run
    # must end where an uninterrupted one does; eager: 4 steps cost less than a trace.

    def model(seed):
        made = notebook_model(train, seed=seed, shuffle_keys=False)
        made.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9), run_eagerly=True)
        return made

    def fit(made, *extra):
        return made.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=extra)

    whole = model(0)
    checkpoint_path = tmp_path / "ckpt.weights.h5"
    fit(whole, keras.callbacks.ModelCheckpoint(checkpoint_path, save_weights_only=True))
    assert int(whole.optimizer.iterations.numpy()) == 4
    from_file = model(1)
    from_file.load_weights(checkpoint_path)
    assert_same_state(from_file, whole)

    backup_dir = tmp_path / "backup"
    crashed = model(0)
    with pytest.raises(Interrupt):
        fit(crashed, keras.callbacks.BackupAndRestore(backup_dir), InterruptAt(1, 1))
    metadata = json.loads((backup_dir / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1  # the backup of epoch 0's end
    assert int(crashed.optimizer.iterations.numpy()) == 3  # it ran one step past it

    resumed = model(2)  # a new session: other initial weights
    epochs = EpochsRun()
    fit(resumed, keras.callbacks.BackupAndRestore(backup_dir), epochs)
    assert epochs.epochs == [1]  # epoch 0 was not run again
    assert_same_state(resumed, whole, atol=1e-5)
    assert not backup_dir.exists()  # deleted when the run completed


def test_export_equals_tfascl_export(trained, digits, tmp_path):
    train, test = digits
    # The same weights as a tfascl-train run: its run.json and a checkpoint.
    spec = runs.RunSpec(
        method="ascl",
        backbone_width=WIDTH,
        image_size=SIZE,
        num_splits=2,
        projector_dims=(16, 8),
        queue_size=QUEUE,
        batch_size=BATCH,
        mean=train.mean,
        std=train.std,
    )
    runs.save_spec(spec, tmp_path / "run")
    trained.checkpoint().save(str(runs.checkpoint_dir(tmp_path / "run") / "ckpt"))
    cli_dir = export.export_backbone(tmp_path / "run", tmp_path / "serving")
    notebook_dir = trained.export(tmp_path / "notebook")
    assert notebook_dir == tmp_path / "notebook"
    assert sorted(p.name for p in notebook_dir.iterdir()) == sorted(
        p.name for p in cli_dir.iterdir()
    )

    cli, notebook = (tf.saved_model.load(str(d)) for d in (cli_dir, notebook_dir))
    odd = np.random.default_rng(0).integers(0, 256, (3, 20, 27, 3), dtype=np.uint8)
    for images in (test.images, odd):
        a = cli.signatures["serving_default"](images=tf.constant(images))
        b = notebook.signatures["serving_default"](images=tf.constant(images))
        for name in ("embedding", "projection"):
            np.testing.assert_allclose(b[name].numpy(), a[name].numpy(), atol=1e-6)
    normalised = next(iter(eval_dataset(test, 8, SIZE)))[0]
    a = cli.signatures["preprocessed"](images=normalised)["embedding"].numpy()
    b = notebook.signatures["preprocessed"](images=normalised)["embedding"].numpy()
    np.testing.assert_allclose(b, a, atol=1e-6)
    # embed() is the served embedding, and predict over eval_dataset its unnormalised form.
    served = cli.signatures["serving_default"](images=tf.constant(test.images))["embedding"]
    np.testing.assert_allclose(trained.embed(test.images, batch_size=16), served, atol=1e-5)
    predicted = trained.predict(eval_dataset(test, 16, SIZE), verbose=0)
    np.testing.assert_allclose(tf.math.l2_normalize(predicted, axis=1), served, atol=1e-5)

    meta = json.loads((notebook_dir / "assets.extra" / "metadata.json").read_text())
    assert meta["method"] == "ascl" and meta["image_size"] == SIZE
    assert meta["mean"] == list(train.mean) and meta["std"] == list(train.std)
    assert meta["training_steps"] == int(trained.optimizer.iterations.numpy())
    # A second export replaces the first; a folder that is not a SavedModel is refused.
    trained.export(notebook_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a SavedModel"):
        trained.export(tmp_path / "busy")
    shutil.rmtree(tmp_path / "busy")


def test_embed_and_export_need_the_training_normalisation(digits):
    train, _ = digits
    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=WIDTH, num_splits=2)
    model = tfascl.build_model("ascl", backbone, queue_size=QUEUE, projector_dims=(16, 8))
    with pytest.raises(ValueError, match=r"normalization=\(train.mean, train.std\)"):
        model.embed(train.images)
    with pytest.raises(ValueError, match="normalization"):
        model.export("unused")
    with pytest.raises(ValueError, match="3 channels"):
        tfascl.build_model("ascl", backbone, queue_size=QUEUE, normalization=((0.5,), (0.5,)))


def test_backbone_built_on_first_use_builds_the_model_in_its_first_step(tmp_path):
    def backbone():  # no Input: Keras builds it on its first call
        return keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])

    def model_of(backbone_pair):
        return tfascl.MomentumContrast(
            backbone_pair[0],
            tfascl.models.mlp_head(4, 8, 4),
            queue_size=16,
            key_backbone=backbone_pair[1],
            shuffle_keys=False,
        )

    keras.utils.set_random_seed(0)
    model = model_of((backbone(), backbone()))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    assert not model.built
    with pytest.raises(ValueError, match="not yet been built"):
        model.save_weights(tmp_path / "early.weights.h5")
    model.build((None, 8, 8, 3))
    assert model.built and model.backbone.built and model.key_backbone.built
    # The momentum encoder starts from the online weights, as with a built backbone.
    for key, online in zip(model.key_backbone.weights, model.backbone.weights):
        np.testing.assert_array_equal(key.numpy(), online.numpy())

    fresh = model_of((backbone(), backbone()))
    fresh.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    views = tuple(rng.random((8, 8, 8, 3), dtype=np.float32) for _ in range(2))
    fresh.fit(views, np.zeros(8), batch_size=8, epochs=1, verbose=0)
    assert fresh.built and fresh.optimizer.built
    assert len(fresh.optimizer.variables) == 2 + len(fresh.online_weights)
    fresh.save_weights(tmp_path / "m.weights.h5")
    assert (tmp_path / "m.weights.h5").is_file()


@pytest.mark.parametrize("relabel, method", [(True, "byol_ascl"), (False, "byol")])
def test_a_byol_keras_file_of_the_current_release_loads(tmp_path, relabel, method):
    # tfascl 0.1.0 wrote BYOL's relabel as a bool; it is a relabel mode now ("none",
    # "ascl"), as every model's. A .keras file with the bool loads as the same method.
    import zipfile

    from tfascl.models import method_name

    backbone = tfascl.build_backbone("resnet18", SIZE, WIDTH, num_splits=2)
    model = tfascl.build_model(
        method, backbone, projector_dims=(16, 8), num_splits=2, total_steps=4
    )
    model.build((None, SIZE, SIZE, 3))
    current, old = tmp_path / "current.keras", tmp_path / "old.keras"
    model.save(current)
    with zipfile.ZipFile(current) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                assert config["config"]["relabel"] == ("ascl" if relabel else "none")
                config["config"]["relabel"] = relabel  # as the current release wrote it
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert loaded.relabel == ("ascl" if relabel else "none")
    assert method_name(loaded) == method
    images = np.random.default_rng(0).random((4, SIZE, SIZE, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-6)

"""Every bad flag stops tfascl-train before anything is built, with one line naming it."""

from pathlib import Path

import pytest
from helpers import run_python

from tfascl import train_config

REPO = Path(__file__).resolve().parents[1]


def config(tmp_path, **changes):
    base = train_config.TrainConfig(
        model_dir=str(tmp_path / "run"), batch_size=16, queue_size=64, backbone_width=4
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"method": "swav"}, "--method"),
        ({"temperature": 0.0}, "--temperature"),
        ({"target_temperature": -0.05}, "--relabel_temperature"),
        ({"knn_t": 0.0}, "--knn_t"),
        ({"queue_size": 100}, "--queue_size"),
        ({"queue_size": 32, "symmetric": True, "batch_size": 32}, "--queue_size"),
        ({"momentum": 1.5}, "--momentum"),
        ({"sce_lambda": 2.0}, "--sce_lambda"),
        ({"epochs": 0}, "--epochs"),
        ({"warmup_epochs": 20, "epochs": 10}, "--warmup_epochs"),
        ({"max_train_examples": 8}, "--max_train_examples"),
        ({"image_size": 20}, "--image_size"),
        ({"image_size": 4}, "--image_size"),
        ({"image_size": 48, "stem": "imagenet"}, "--image_size"),
        ({"load_size": 16}, "--load_size"),
        ({"flip_prob": 1.5}, "--flip_prob"),
        ({"blur_prob": -0.1}, "--blur_prob"),
        ({"crop_scale": (0.8, 0.5)}, "--crop_scale"),
        ({"dataset": "/no/such/folder"}, "--dataset"),
        ({"dataset": "no_such_dataset_xyz"}, "--dataset"),
        ({"dataset": "cifar10", "data_dir": "/nonexistent"}, "--dataset"),
    ],
)
def test_bad_flag_is_one_line_naming_it(tmp_path, changes, flag):
    with pytest.raises(train_config.FlagError) as error:
        train_config.validate(config(tmp_path, **changes))
    message = str(error.value)
    assert message.startswith(f"{flag}=") and "\n" not in message
    assert not (tmp_path / "run").exists()  # checked before anything is made


def test_unprepared_tfds_names_where_it_looked(tmp_path, monkeypatch):
    # Without --data_dir the message names TFDS's own default, resolved, not a placeholder.
    # That default is an empty folder here, whatever this machine has prepared in its own.
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import constants

    empty_default = tmp_path / "default_tfds"
    empty_default.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty_default))
    monkeypatch.setattr(constants, "DATA_DIR", str(empty_default))

    with pytest.raises(
        train_config.FlagError, match=r"^--dataset=cifar10: .*not prepared"
    ) as error:
        train_config.validate(config(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "tfds")))
    assert f"looked for {tmp_path / 'tfds' / 'cifar10'}" in str(error.value)
    # A TFDS name with a config is a TFDS name, not a missing folder.
    with pytest.raises(train_config.FlagError, match="not prepared") as error:
        train_config.validate(
            config(tmp_path, dataset="imagenette/160px-v2", data_dir=str(tmp_path / "tfds"))
        )
    assert "imagenette/160px-v2" in str(error.value).split("looked for")[1]
    default = tfds.builder("cifar10").data_dir
    assert default.startswith(str(empty_default))
    with pytest.raises(train_config.FlagError, match="not prepared") as error:
        train_config.validate(config(tmp_path, dataset="cifar10"))
    assert f"looked for {default}" in str(error.value)


def test_model_dir_must_be_writable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(train_config.FlagError, match=r"^--model_dir=.*not writable"):
        train_config.validate(config(tmp_path, model_dir=str(tmp_path / "file" / "run")))


def test_replica_checks_need_the_strategy(tmp_path):
    with pytest.raises(train_config.FlagError, match=r"^--batch_size=16: .*3 replicas"):
        train_config.check_replicas(config(tmp_path), 3)
    with pytest.raises(train_config.FlagError, match=r"^--num_splits=3: .*per-replica batch 16"):
        train_config.check_replicas(config(tmp_path, num_splits=3), 1)
    # Several replicas: MoCo's shuffle BN for queue methods, sync BN for BYOL (no splits).
    resolved = train_config.check_replicas(config(tmp_path, num_splits=3), 2)
    assert (resolved.norm, resolved.jit_compile) == ("shuffle", False)
    byol = train_config.check_replicas(config(tmp_path, num_splits=3, method="byol"), 2)
    assert byol.norm == "sync"
    assert train_config.check_replicas(config(tmp_path), 1).norm == "split"
    with pytest.raises(train_config.FlagError, match=r"^--norm=shuffle: .*1 replica"):
        train_config.check_replicas(config(tmp_path, norm="shuffle"), 1)
    with pytest.raises(train_config.FlagError, match=r"^--num_splits=3: .*per-replica batch 8"):
        split_keys = config(tmp_path, num_splits=3, norm="batch", key_norm="split")
        train_config.check_replicas(split_keys, 2)


def test_the_default_config_is_valid(tmp_path):
    train_config.validate(train_config.TrainConfig(model_dir=str(tmp_path)))


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--method=swav"], "--method"),
        (["--projector_dims=2048"], "--projector_dims"),
        (["--crop_scale=0.5,x"], "--crop_scale"),
        (["--batch_size=abc"], "--batch_size"),
    ],
)
def test_flag_parse_errors_are_one_line_and_exit_2(args, flag, capsys):
    train_config.define_flags()  # the command defines them when it starts
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_config.parse_flags(["tfascl-train", *args])
            train_config.config_from_flags()  # projector_dims is checked here
    except train_config.FlagError as error:  # what main() prints as one line
        assert str(error).startswith(flag) and "\n" not in str(error)
        return
    finally:
        train_config.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0] and lines[0].startswith("tfascl-train: error:")


def test_cli_exits_2_with_one_line_before_building_anything(tmp_path):
    result = run_python(
        "-m", "tfascl.train", "--queue_size=100", f"--model_dir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tfascl-train: error:")]
    assert len(errors) == 1 and "--queue_size=100" in errors[0], result.stderr
    assert not (tmp_path / "r").exists()

"""The registry's MethodSpecs: each method builds as its spec says, and the flags, their
validation and RunSpec all take the method's facts (and their defaults) from one place."""

import dataclasses
import json
from types import SimpleNamespace

import keras
import pytest

import tfascl
from tfascl import train
from tfascl.models import METHODS, MethodSpec, build_model, method_label, method_name
from tfascl.models.batchnorm import SplitBatchNorm
from tfascl.models.registry import accepted_arguments
from tfascl.runs import RunSpec
from tfascl.train_config import FlagError, TrainConfig, check_replicas, validate

SIZE, WIDTH, BATCH, QUEUE = 16, 4, 8, 16
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def tiny_backbone():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(WIDTH, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(SplitBatchNorm(num_splits=2)(x))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def queue_options(spec: MethodSpec) -> dict:
    return {"queue_size": QUEUE, "batch_size": BATCH} if spec.uses_queue else {}


def test_the_registry_is_a_table_of_method_specs():
    assert tfascl.METHODS is METHODS and tfascl.MethodSpec is MethodSpec
    assert all(isinstance(s, MethodSpec) and s.name == n for n, s in METHODS.items())
    labels = [spec.label for spec in METHODS.values()]
    assert all(labels) and len(set(labels)) == len(labels)
    assert method_label("ascl") == "ASCL" and method_label("not_a_method") == "not_a_method"
    with pytest.raises(TypeError):
        METHODS["ascl"].fixed["relabel"] = "none"  # shared by every caller: read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["ascl"].uses_queue = False


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_builds_as_its_spec_says(method):
    spec = METHODS[method]
    keras.utils.set_random_seed(0)
    model = build_model(
        method,
        tiny_backbone(),
        projector_dims=(16, 8),
        num_splits=2,
        total_steps=4,
        **queue_options(spec),
    )
    assert type(model) is spec.model_class
    assert method_name(model) == method
    config = model.get_config()
    # get_config holds every keyword the class takes (read from its signature), with the
    # value the model uses: from_config rebuilds the same method.
    assert accepted_arguments(spec.model_class) <= set(config)
    for option, value in {**spec.fixed, **spec.defaults}.items():
        assert getattr(model, option) == value == config[option], option
    if spec.uses_queue:
        assert config["queue_size"] == QUEUE == model.queue.keys.shape[0]
    if hasattr(model, "symmetric"):  # the MoCo family and BYOL; SimCLR's loss is symmetric
        assert model.symmetric is spec.symmetric
    assert hasattr(model, "momentum_schedule") is spec.has_momentum_encoder
    if spec.has_momentum_encoder:
        assert model.momentum_schedule == spec.momentum_schedule
    projector_norms = [layer.name for layer in model.projector.layers if "_bn" in layer.name]
    assert bool(projector_norms) is spec.projector_bn
    assert hasattr(model, "queue") is spec.uses_queue
    if isinstance(model, tfascl.MomentumContrast):  # a relabel mode of the contrastive loss
        relabels = model.objective == "contrastive" and model.relabel != "none"
    else:  # BYOL: in-batch soft targets or none; SimCLR relabels only as a plug-in; NNCLR
        # and MSF have no targets to relabel
        relabels = getattr(model, "relabel", "none") != "none"
    assert relabels is (spec.relabel_kind is not None)
    if spec.uses_queue:
        # "hard" relabelling puts targets on the top-K queue keys only: the class then
        # refuses K larger than the queue; the others take any K.
        too_many = {**queue_options(spec), "num_neighbors": QUEUE + 1}
        build = lambda: build_model(method, tiny_backbone(), projector_dims=(16, 8), **too_many)  # noqa: E731
        if spec.relabel_kind == "hard" or method == "msf":  # MSF: its k nearest bank rows
            with pytest.raises(ValueError, match="num_neighbors"):
                build()
        else:
            build()


def test_method_name_is_none_for_a_model_no_method_describes():
    model = build_model("ascl", tiny_backbone(), projector_dims=(16, 8), queue_size=QUEUE)
    model.objective = "unknown"
    assert method_name(model) is None


def effective_class_options(spec: RunSpec) -> dict:
    """What ``build_model`` passes to the model class for ``spec``, without building it."""
    method = METHODS[spec.method]
    return {**method.default_options(), **spec.model_options(), **method.fixed}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_train_config_and_run_spec_defaults_make_the_same_model(method):
    # tfascl-train's run.json for --method=M on one device, every other flag default...
    config = check_replicas(TrainConfig(method=method), replicas=1)
    run_data = train.RunData(SimpleNamespace(mean=MEAN, std=STD), None, None, 10)
    from_flags = train.make_spec(config, run_data, total_steps=100)
    # ...and RunSpec(method=M) given only what a run measures (steps, batch, statistics).
    direct = RunSpec(
        method=method,
        total_steps=100,
        batch_size=config.batch_size,
        mean=MEAN,
        std=STD,
        num_classes=10,
    )
    fields, direct_fields = dataclasses.asdict(from_flags), dataclasses.asdict(direct)
    # make_spec writes the resolved loss direction; RunSpec leaves it to the method.
    assert direct_fields.pop("symmetric") is None
    assert fields.pop("symmetric") is METHODS[method].symmetric
    assert fields == direct_fields
    assert effective_class_options(from_flags) == effective_class_options(direct)


@pytest.mark.parametrize("method", ["ascl", "byol"])
def test_run_spec_builds_the_methods_loss_direction(method):
    # RunSpec(method="byol") once built an asymmetric BYOL while build_model built a
    # symmetric one; both now take the method's default.
    tiny = dict(backbone_width=WIDTH, image_size=SIZE, num_splits=2, projector_dims=(16, 8))
    model = RunSpec(method=method, queue_size=QUEUE, batch_size=BATCH, total_steps=4, **tiny)
    assert model.build_model().symmetric is TrainConfig(method=method).uses_symmetric_loss


@pytest.mark.parametrize("method", sorted(METHODS))
def test_validation_applies_queue_rules_to_exactly_the_queue_methods(method, tmp_path):
    spec = METHODS[method]
    common = dict(method=method, batch_size=16, model_dir=str(tmp_path), symmetric=False)

    def error(**values):
        try:
            validate(TrainConfig(**{**common, **values}))
        except FlagError as flag_error:
            return str(flag_error)
        return None

    assert error(queue_size=32) is None
    not_a_multiple = error(queue_size=24)
    assert (not_a_multiple is not None) is spec.uses_queue
    if spec.uses_queue:
        assert not_a_multiple.startswith("--queue_size=24:")
        # A symmetric loss enqueues both views' keys (the MoCo family): the queue must hold
        # twice the batch. NNCLR and MSF enqueue one view whatever the loss direction.
        doubled = error(queue_size=16, symmetric=True)
        assert (doubled is not None) is (spec.queue_keys(True) == 2)
        assert spec.queue_keys(True) == (2 if spec.model_class is tfascl.MomentumContrast else 1)
        if doubled:
            assert doubled.startswith("--queue_size=16:")
    too_many = error(queue_size=32, num_neighbors=33)
    assert (too_many is not None) is (spec.relabel_kind == "hard" or method == "msf")
    if too_many:
        assert too_many.startswith("--num_neighbors=33:")
    # Shuffle BN across replicas is the default of a momentum encoder with a queue (the
    # MoCo family, MSF); BYOL, SimCLR and NNCLR synchronise BN.
    norm = check_replicas(TrainConfig(**common), replicas=2).norm
    assert norm == ("shuffle" if spec.shuffles_keys else "sync")
    assert spec.shuffles_keys is (spec.uses_queue and spec.has_momentum_encoder)


def test_each_option_is_declared_once_and_every_layer_takes_it_from_there():
    # tfascl.options declares an option once: TrainConfig's field, RunSpec's field (run.json),
    # the flag (its name, default and choices) and the model's keyword all come from it.
    from absl import flags as absl_flags

    from tfascl import options, train_config

    config_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    spec_fields = {f.name: f for f in dataclasses.fields(RunSpec)}
    flag_values = train_config.define_flags(absl_flags.FlagValues())
    classes = {spec.model_class for spec in METHODS.values()}
    assert len({o.name for o in options.OPTIONS}) == len(options.OPTIONS)
    for option in options.OPTIONS:
        for fields in (config_fields, spec_fields):
            assert fields[option.name].metadata["option"] is option, option.name
            assert fields[option.name].default == option.default, option.name
        flag = flag_values[option.flag_name]
        default = [str(d) for d in option.default] if option.kind == "pair" else option.default
        assert flag.default == default and flag.help.endswith(option.help), option.name
        if option.choices:
            assert list(flag.parser.enum_values) == list(option.choices), option.name
        if option.group == options.ARCHITECTURE:
            continue
        # A model or method option is some model class's keyword, and a RunSpec that
        # sets it passes it on as that keyword.
        assert any(option.name in accepted_arguments(c) for c in classes), option.name
        value = {"int": 3, "float": 0.25, "bool": True, "str": (option.choices or ("x",))[-1]}
        spec = RunSpec(**{option.name: value[option.kind]})
        assert spec.model_options()[option.name] == value[option.kind], option.name
    # τ′ has one name in the code; the flag keeps the recipes' name.
    assert options.flag_name("target_temperature") == "relabel_temperature"
    assert "relabel_temperature" not in config_fields and "relabel_temperature" in flag_values
    assert "target_temperature" not in flag_values


def test_a_run_json_of_the_current_release_loads():
    # run.json as tfascl 0.1.0 writes it (every field; τ′ and K set): the options'
    # declaration moved, their names did not.
    written = {
        "backbone": "resnet18", "backbone_width": 16, "batch_size": 128,
        "consistency_temperature": None, "consistency_weight": None, "dataset": "digits",
        "debias_prior": None, "image_size": 32, "key_norm": None, "mean": [0.4, 0.5, 0.6],
        "method": "ascl", "momentum": 0.99, "momentum_schedule": None, "norm": "split",
        "num_classes": 10, "num_neighbors": 3, "num_splits": 8, "predictor_hidden": None,
        "projector_bn": None, "projector_dims": [2048, 128], "queue_size": 4096,
        "relabel": None, "sce_lambda": 0.5, "std": [0.2, 0.25, 0.3], "stem": None,
        "symmetric": False, "target_temperature": 0.07, "temperature": 0.1,
        "total_steps": 3900,
    }  # fmt: skip
    spec = RunSpec.from_dict(written)
    assert json.loads(spec.to_json()) == written  # read and written back unchanged
    assert spec.projector_dims == (2048, 128) and spec.mean == (0.4, 0.5, 0.6)
    keywords = spec.model_options()
    assert (keywords["target_temperature"], keywords["num_neighbors"]) == (0.07, 3)

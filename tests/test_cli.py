"""The three commands' shared surface (tfascl.cli): usage errors exit 2 with one line naming
the flag, no absl flag is defined at import, the dataset check reports TFDS's own error, and
flags.txt replays a run."""

import dataclasses
import json
import sys

import pytest
from helpers import REPO, TINY_RUN_FLAGS, python_env, run_python

from tfascl import cli, runs, train, train_config
from tfascl.train_config import TrainConfig

BIN = f"{sys.prefix}/bin"


def test_importing_every_tfascl_module_defines_no_absl_flag():
    # A fresh process: the flags absl, TensorFlow and TFDS define themselves, then every
    # module of the package (and the launcher); the second set must equal the first.
    script = """
import json, pkgutil, importlib
from absl import app, flags, logging
import keras, tensorflow, tensorflow_datasets
before = set(flags.FLAGS)
import tfascl, tfascl_launch
names = [m.name for m in pkgutil.walk_packages(tfascl.__path__, "tfascl.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "new": sorted(set(flags.FLAGS) - before)}))
"""
    process = run_python("-c", script, cwd=REPO)
    assert process.returncode == 0, process.stderr[-2000:]
    found = json.loads(process.stdout.strip().splitlines()[-1])
    assert {"tfascl.train", "tfascl.train_config", "tfascl.evaluation.cli"} <= set(found["modules"])
    assert found["new"] == []


def _command(name, *args, cwd=None):
    """The installed console script, as a user runs it (the launcher quiets TensorFlow)."""
    import subprocess

    env = python_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    return subprocess.run(
        [f"{BIN}/{name}", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def spec_only_run(tmp_path_factory):
    """A folder with a run.json and no checkpoint: enough for the flag checks."""
    folder = tmp_path_factory.mktemp("run")
    runs.save_spec(runs.RunSpec(backbone_width=4, image_size=16), folder)
    return folder


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (
            "tfascl-train",
            ["--dataset=imagenette/160px-v2", "--data_dir={tmp}/empty", "--model_dir={tmp}/m"],
            "--dataset=imagenette/160px-v2: TFDS dataset not prepared (looked for {tmp}/empty/",
        ),
        ("tfascl-eval", ["--model_dir={run}", "--knn_k=-1"], "--knn_k=-1: must be >= 1"),
        ("tfascl-export", ["--model_dir=/nonexistent"], "--model_dir=/nonexistent: not a"),
    ],
)
def test_usage_errors_exit_2_with_one_line_naming_the_flag(
    command, args, expected, spec_only_run, tmp_path
):
    values = {"tmp": tmp_path, "run": spec_only_run}
    process = _command(command, *(arg.format(**values) for arg in args))
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert process.returncode == cli.EXIT_USAGE == 2, process.stderr
    # One line only: TFDS's own warning about the empty folder is silenced around the check.
    assert lines == [lines[0]] and lines[0].startswith(f"{command}: error: ")
    assert expected.format(**values) in lines[0]


def _parsed(define, args):
    from absl import flags

    values = define(flags.FlagValues())
    values(["program", *args])
    return values


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model_dir=/nonexistent"], r"^--model_dir=/nonexistent: not a tfascl run"),
        (["--model_dir={run}", "--knn_k=0"], r"^--knn_k=0: must be >= 1"),
        (["--model_dir={run}", "--knn_temperature=0"], r"^--knn_temperature=0.0: must be > 0"),
        (["--model_dir={run}", "--linear_milestones=6,x"], r"^--linear_milestones=6,x: "),
        (["--model_dir={run}", "--linear_epochs=0"], r"^--linear_epochs=0: must be >= 1"),
        (["--model_dir={run}", "--linear_lr=-1"], r"^--linear_lr=-1.0: must be > 0"),
        (["--model_dir={run}", "--saved_model={run}"], "exactly one of --model_dir"),
        (["--model_dir={run}", "--dataset=/no/such/folder"], r"^--dataset=/no/such/folder: "),
        (["--model_dir={run}", "--compare_model_dir={run}"], "is for --protocol=plots"),
        (["--protocol=plots", "--model_dir={run}", "--plots=tsne"], r"^--plots=tsne: "),
    ],
)
def test_eval_checks_every_flag_before_loading(args, expected, spec_only_run):
    from tfascl.evaluation import EvalInputError
    from tfascl.evaluation import cli as eval_cli

    values = _parsed(eval_cli.define_flags, [a.format(run=spec_only_run) for a in args])
    with pytest.raises(EvalInputError, match=expected):
        eval_cli.run_with(values)


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], r"^--model_dir: required"),
        (["--model_dir={run}", "--version=-1"], r"^--version=-1: must be >= 0"),
        (["--model_dir={run}", "--formats=saved_model,gif"], r"^--formats=saved_model,gif: "),
        (["--model_dir={run}/nope"], r"^--model_dir=.*/nope: not a tfascl run"),
        (["--model_dir={run}"], r"^--checkpoint=latest: no 'latest' checkpoint"),
    ],
)
def test_export_checks_every_flag_before_building(args, expected, spec_only_run):
    from tfascl import export

    values = _parsed(export.define_flags, [a.format(run=spec_only_run) for a in args])
    with pytest.raises(cli.FlagError, match=expected):
        export.check_flags(values)


def test_dataset_problem_reports_tfds_own_error(tmp_path):
    empty = str(tmp_path)
    assert cli.dataset_problem("digits", None) is None
    assert cli.dataset_problem(str(tmp_path), None) is None  # an existing folder
    assert "Image folder not found" in cli.dataset_problem(str(tmp_path / "missing"), None)
    assert "not prepared" in cli.dataset_problem("imagenette/160px-v2", empty)
    # Not every TFDS failure is an unknown name: a bad config says so, in TFDS's words.
    bad_config = cli.dataset_problem("imagenette/nosuchconfig", empty)
    assert "TFDS cannot open it" in bad_config and "nosuchconfig not found" in bad_config
    unknown = cli.dataset_problem("nosuchdataset", empty)
    assert "not 'digits', an existing folder or a TFDS name" in unknown
    assert "nosuchdataset not found" in unknown


def _every_kind_changed() -> TrainConfig:
    """A config whose values differ from the defaults in each kind of field."""
    config = TrainConfig(
        method="sce",  # enum
        temperature=0.2,  # float
        target_temperature=0.07,  # None-able float (flag --relabel_temperature)
        symmetric=True,  # None-able bool
        momentum_schedule="cosine",  # None-able enum
        jit_augment=False,  # bool, default on
        scale_lr=True,  # bool, default off
        epochs=7,  # int
        knn_bank_size=300,  # None-able int
        dataset="cifar10",  # str
        model_dir="/tmp/somewhere/run",  # None-able str
        projector_dims=(64, 8),  # list
        memory_budget_gb=1.5,
        weight_decay=1.0e-4,
        queue_size=256,
    )
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("method", "temperature", "symmetric", "epochs", "projector_dims"):
            assert getattr(config, field.name) != field.default, field.name
    return config


@pytest.mark.parametrize("config", [TrainConfig(), _every_kind_changed()], ids=["default", "set"])
def test_flags_txt_parses_back_to_the_same_config(config, tmp_path):
    path = tmp_path / runs.FLAGS_TEXT_FILE
    path.write_text(train_config.flagfile_text(config))
    assert train_config.config_from_args([f"--flagfile={path}"]) == config
    # Later flags override the file, as with any flagfile.
    again = train_config.config_from_args([f"--flagfile={path}", "--epochs=9"])
    assert again == dataclasses.replace(config, epochs=9)


def test_a_run_writes_flags_txt_that_replays_it(tmp_path):
    model_dir = tmp_path / "run"
    args = [*TINY_RUN_FLAGS, "--epochs=1", "--warmup_epochs=0", "--max_train_examples=32",
            "--knn_every=0", "--noexport", f"--model_dir={model_dir}"]  # fmt: skip
    config = train.config_from_args(args)
    first = train.train(config)
    assert first.exit_code == 0 and first.summary["completed"]
    replayed = train.config_from_args([f"--flagfile={model_dir / runs.FLAGS_TEXT_FILE}"])
    assert replayed == dataclasses.replace(config, model_dir=str(model_dir.resolve()))
    # The same run: re-running it finds it complete (a changed key flag would be refused).
    again = train.train(replayed)
    assert again.exit_code == 0 and again.model is None and again.summary["steps"] == 2


def test_the_flag_choices_mirror_the_modules_that_implement_them():
    # tfascl-train defines its flags from tfascl.choices before TensorFlow starts; the
    # model names there mirror tfascl.models (a method added to the registry goes there too).
    from tfascl import choices, models, optim
    from tfascl.data import augment, pipeline
    from tfascl.models import backbones, batchnorm

    assert choices.METHOD_NAMES == tuple(models.METHODS), "add the method to tfascl/choices.py"
    assert choices.RESNET_NAMES == tuple(backbones.RESNETS)
    assert (choices.STEMS, choices.NORMS, choices.KEY_NORMS) == (
        backbones.STEMS,
        batchnorm.NORMS,
        batchnorm.KEY_NORMS,
    )
    assert all(choices.default_stem(s) == backbones.default_stem(s) for s in range(8, 320, 8))
    assert optim.OPTIMIZER_NAMES is choices.OPTIMIZER_NAMES
    assert augment.KEY_AUGMENTS is choices.KEY_AUGMENTS
    assert (pipeline.AUGMENT_ON, pipeline.INPUT_MODES) == (choices.AUGMENT_ON, choices.INPUT_MODES)


# --- One way to define flags: each command's flags are its dataclass's fields ----------------


def _flag_dump(flag_values):
    """Every flag of ``flag_values`` as tfascl's help shows it: kind, default, choices, help."""
    dump = {}
    for name, flag in flag_values._flags().items():
        if name != flag.name:  # a short name
            continue
        dump[name] = {
            "alias": type(flag).__name__ == "_FlagAlias",
            "parser": type(flag.parser).__name__,
            "default": flag.default,
            "enum": list(getattr(flag.parser, "enum_values", None) or []),
            "help": flag.help,
            "module": flag_values.find_module_defining_flag(name),
        }
    return dump


def _commands():
    from tfascl import export
    from tfascl.evaluation import cli as eval_cli

    # (define, the dataclass, renames {field: flag}, aliases {alias: flag}, enums, module)
    return {
        "tfascl-train": (train_config.define_flags, TrainConfig, train_config.FLAG_NAMES,
                         {"knn_temperature": "knn_t"}, train_config.ENUMS, "tfascl.train_config"),
        "tfascl-eval": (eval_cli.define_flags, eval_cli.EvalFlags, {},
                        {"knn_t": "knn_temperature"}, eval_cli.ENUMS, "tfascl.evaluation.cli"),
        "tfascl-export": (export.define_flags, export.ExportFlags, {}, {}, {}, "tfascl.export"),
    }  # fmt: skip


PARSERS = {"bool": "BooleanParser", "int": "IntegerParser", "float": "FloatParser",
           "str": "ArgumentParser", "tuple": "ListParser"}  # fmt: skip


@pytest.mark.parametrize("command", ["tfascl-train", "tfascl-eval", "tfascl-export"])
def test_each_command_s_flags_are_its_dataclass_fields(command):
    from absl import flags

    define, config_type, renames, aliases, enums, module = _commands()[command]
    dump = _flag_dump(define(flags.FlagValues()))
    fields = {renames.get(f.name, f.name): f for f in dataclasses.fields(config_type)}
    # Exactly the fields, plus the documented second spellings: nothing defined by hand.
    assert {name for name, flag in dump.items() if not flag["alias"]} == set(fields)
    assert {name: dump[name]["alias"] for name in aliases} == dict.fromkeys(aliases, True)
    assert set(dump) == set(fields) | set(aliases)
    for name, field in fields.items():
        flag, kind = dump[name], cli.field_kind(field)
        assert flag["module"] == module, name
        if field.name in enums:  # absl writes an enum's choices before its help
            choices = list(enums[field.name])
            assert flag["parser"] == "EnumParser" and flag["enum"] == choices
            assert flag["help"] == f"<{'|'.join(choices)}>: {field.metadata['help']}"
        else:
            assert flag["help"] == field.metadata["help"], name
            assert flag["parser"] == PARSERS[kind], name
        default = [str(v) for v in field.default] if kind == "tuple" else field.default
        assert flag["default"] == default, name


def test_the_flags_that_mean_the_same_have_the_same_names_in_train_and_eval():
    from absl import flags

    commands = _commands()
    train = _flag_dump(commands["tfascl-train"][0](flags.FlagValues()))
    evaluate = _flag_dump(commands["tfascl-eval"][0](flags.FlagValues()))
    shared = ["knn_k", "batch_size", "image_size", "data_dir", "train_split", "test_split",
              "max_train_examples", "knn_t", "knn_temperature", "seed", "dataset", "input",
              "memory_budget_gb", "eval_crop", "model_dir"]  # fmt: skip
    assert set(shared) <= set(train) & set(evaluate)
    # The kNN temperature: one concept, both spellings in both commands, either one sets it.
    for define, real in ((commands["tfascl-train"][0], "knn_t"),
                         (commands["tfascl-eval"][0], "knn_temperature")):  # fmt: skip
        for spelling in ("knn_t", "knn_temperature"):
            values = _parsed(define, [f"--{spelling}=0.37"])
            assert values[real].value == 0.37, (real, spelling)


def test_eval_flags_map_onto_eval_config_and_linear_config():
    # EvalFlags is TensorFlow-free (flags are parsed before TensorFlow starts), so it
    # declares EvalConfig's fields again: they must agree, name for name and default too.
    from tfascl.evaluation import EvalConfig, LinearConfig
    from tfascl.evaluation import cli as eval_cli

    flags_ = {f.name: f.default for f in dataclasses.fields(eval_cli.EvalFlags)}
    config = {eval_cli.CONFIG_FIELDS.get(name, name): name for name in flags_}
    for field in dataclasses.fields(EvalConfig):
        if field.name == "linear":
            continue
        assert field.name in config, f"EvalConfig.{field.name} has no tfascl-eval flag"
        assert flags_[config[field.name]] == field.default, field.name
    linear = {"epochs": "linear_epochs", "batch_size": "linear_batch_size",
              "learning_rate": "linear_lr", "schedule": "linear_schedule",
              "milestones": "linear_milestones", "eval_every": "linear_eval_every",
              "fast": "linear_fast", "jit_compile": "linear_jit"}  # fmt: skip
    for field, flag in linear.items():
        assert flags_[flag] == getattr(LinearConfig(), field), flag
    # And the parsed defaults build the default config.
    built = eval_cli.eval_config(_parsed(eval_cli.define_flags, ["--model_dir=/m"]))
    assert built == EvalConfig(model_dir="/m")
    built = eval_cli.eval_config(
        _parsed(eval_cli.define_flags, ["--model_dir=/m", "--nowrite_results", "--knn_t=0.2"])
    )
    assert built == EvalConfig(model_dir="/m", write=False, knn_temperature=0.2)


def test_define_flags_from_reads_each_field_s_type_default_and_help():
    from absl import flags

    @dataclasses.dataclass
    class Toy:
        size: int | None = cli.flag_field(None, "A size.")
        rate: float = cli.flag_field(0.5, "A rate.")
        name: str = cli.flag_field("a", "A name.")
        on: bool = cli.flag_field(True, "On.")
        dims: tuple[int, ...] = cli.flag_field((1, 2), "Dims.")
        plain: str = "x"  # no metadata: its help from helps=

    values = cli.define_flags_from(
        Toy, flags.FlagValues(), enums={"name": ["a", "b"]}, renames={"rate": "lr"},
        helps={"plain": "Plain."}, aliases={"learning_rate": "lr"},
    )  # fmt: skip
    dump = _flag_dump(values)
    assert {n: (d["parser"], d["default"]) for n, d in dump.items() if not d["alias"]} == {
        "size": ("IntegerParser", None),
        "lr": ("FloatParser", 0.5),
        "name": ("EnumParser", "a"),
        "on": ("BooleanParser", True),
        "dims": ("ListParser", ["1", "2"]),
        "plain": ("ArgumentParser", "x"),
    }
    assert dump["plain"]["help"] == "Plain." and dump["learning_rate"]["alias"]
    assert dump["size"]["module"] == __name__  # the caller's, as a hand-written DEFINE's
    assert cli.define_flags_from(Toy, values, renames={"rate": "lr"}, helps={"plain": ""}) is values
    values(["program", "--size=3", "--learning_rate=0.1", "--dims=4", "--name=b"])
    got = cli.values_from_flags(Toy, values, renames={"rate": "lr"})
    assert got == {"size": 3, "rate": 0.1, "name": "b", "on": True, "dims": ["4"], "plain": "x"}

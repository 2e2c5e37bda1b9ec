"""Evaluation of pretrained encoders: kNN and linear probes, results.json, pictures.

``evaluate(EvalConfig(protocol, model_dir=... | saved_model=..., dataset=...))`` (or
``evaluate("knn", model_dir=...)``) is the Python entry; ``tfascl-eval``
(``tfascl.evaluation.cli``) is the command line around it.

Names are imported from their modules when first used (PEP 562): importing this package
(and a TensorFlow-free module of it) does not start TensorFlow.
"""

from typing import TYPE_CHECKING

from tfascl._lazy import lazy_exports

_EXPORTS = {
    # Submodules, as attributes (`data.stream.epoch_seed`), imported on first use.
    "api": ".api",
    "cli": ".cli",
    "datasets": ".datasets",
    "encoders": ".encoders",
    "knn": ".knn",
    "linear": ".linear",
    "linear_batches": ".linear_batches",
    "neighbors": ".neighbors",
    "protocols": ".protocols",
    "results": ".results",
    # Names, from the module that defines them.
    "PROTOCOLS": ".api",
    "EvalConfig": ".api",
    "evaluate": ".api",
    "resolve_dataset": ".api",
    "Encoder": ".encoders",
    "EvalInputError": ".encoders",
    "from_model_dir": ".encoders",
    "from_saved_model": ".encoders",
    "is_saved_model": ".encoders",
    "load_encoder": ".encoders",
    "LinearConfig": ".linear",
    "build_classifier": ".linear",
    "embed_images": ".datasets",
    "knn_protocol": ".knn",
    "linear_protocol": ".linear",
    "load_labelled": ".datasets",
    "RESULTS_FILE": ".results",
    "format_table": ".results",
    "read_results": ".results",
    "update_results": ".results",
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from tfascl.evaluation.api import PROTOCOLS, EvalConfig, evaluate, resolve_dataset
    from tfascl.evaluation.datasets import embed_images, load_labelled
    from tfascl.evaluation.encoders import (
        Encoder,
        EvalInputError,
        from_model_dir,
        from_saved_model,
        is_saved_model,
        load_encoder,
    )
    from tfascl.evaluation.knn import knn_protocol
    from tfascl.evaluation.linear import LinearConfig, build_classifier, linear_protocol
    from tfascl.evaluation.results import RESULTS_FILE, format_table, read_results, update_results

__all__ = [
    "PROTOCOLS",
    "RESULTS_FILE",
    "Encoder",
    "EvalConfig",
    "EvalInputError",
    "LinearConfig",
    "build_classifier",
    "embed_images",
    "evaluate",
    "format_table",
    "from_model_dir",
    "from_saved_model",
    "is_saved_model",
    "knn_protocol",
    "linear_protocol",
    "load_encoder",
    "load_labelled",
    "read_results",
    "resolve_dataset",
    "update_results",
]

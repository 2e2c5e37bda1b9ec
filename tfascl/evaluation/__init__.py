"""Evaluation of pretrained encoders: kNN and linear probes, results.json, pictures.

``evaluate(EvalConfig(protocol, model_dir=... | saved_model=..., dataset=...))`` (or
``evaluate("knn", model_dir=...)``) is the Python entry; ``tfascl-eval``
(``tfascl.evaluation.cli``) is the command line around it.
"""

from tfascl.evaluation.api import PROTOCOLS, EvalConfig, evaluate, resolve_dataset
from tfascl.evaluation.encoders import (
    Encoder,
    EvalInputError,
    from_model_dir,
    from_saved_model,
    is_saved_model,
    load_encoder,
)
from tfascl.evaluation.protocols import (
    LinearConfig,
    build_classifier,
    embed_images,
    knn_protocol,
    linear_protocol,
    load_labelled,
)
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

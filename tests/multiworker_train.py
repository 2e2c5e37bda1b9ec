"""Run as a script: one worker of a multi-worker tfascl-train run (TF_CONFIG, or SLURM's
variables, set by the caller).

    python tests/multiworker_train.py OUT.npz --strategy=multi_worker --flag=value ...

Trains through ``tfascl.train.train`` like the CLI, then writes this worker's view of the
final state (every model weight, the queue included) and its step count to OUT.npz, so
the test can check that the workers agree (and the kNN monitor's passes and numbers), and
exits with the run's exit status.
"""

import os
import sys
from typing import ClassVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from tfascl import data, train


class RecordedSkippedFiles(data.SkippedFiles):
    """SkippedFiles that keeps itself: its record says which files this worker decoded."""

    made: ClassVar[list] = []

    def __init__(self, files, **options) -> None:
        super().__init__(files, **options)
        self.made.append(self)


class RecordedSkippedRecords(data.SkippedRecords):
    """The same for TFRecord shards: which records this worker decoded."""

    made: ClassVar[list] = []

    def __init__(self, files, **options) -> None:
        super().__init__(files, **options)
        self.made.append(self)


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    config = train.config_from_args(args)
    # tfascl.data.training looks them up in their modules at run time.
    data.stream.SkippedFiles = RecordedSkippedFiles
    data.tfrecord.SkippedRecords = RecordedSkippedRecords
    result = train.train(config)
    decoded = {}
    if RecordedSkippedFiles.made:  # streamed: the first epoch each file was decoded in
        decoded["first_decoded"] = RecordedSkippedFiles.made[0].first_decoded.numpy()
        decoded["paths"] = RecordedSkippedFiles.made[0].files.paths.astype(str)
    if RecordedSkippedRecords.made:  # TFRecord shards: the same per record, and the shards
        decoded["first_decoded"] = RecordedSkippedRecords.made[0].first_decoded.numpy()
        decoded["shard_starts"] = RecordedSkippedRecords.made[0].files.starts
    model = result.model
    weights = {
        f"{i:03d}_{w.path.replace('/', '.')}": np.asarray(w) for i, w in enumerate(model.weights)
    }
    summary = result.summary
    np.savez(
        out,
        exit_code=result.exit_code,
        steps=int(model.optimizer.iterations.numpy()),
        # The kNN monitor: feature passes this worker ran, and the numbers it logged.
        knn_passes=summary.get("knn_passes", 0),
        knn=[summary.get(k) or np.nan for k in ("initial_knn_top1", "final_knn_top1")],
        replicas=model.distribute_strategy.num_replicas_in_sync,
        **decoded,
        **weights,
    )
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()

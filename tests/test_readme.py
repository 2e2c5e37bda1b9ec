"""The README's Keras example runs, at a smaller size."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_fit_example_runs():
    text = README.read_text()
    block = re.search(r"## ASCL in a Keras notebook\n\n```python\n(.*?)```", text, re.S).group(1)
    small = (
        block.replace("width=16", "width=4")
        .replace("epochs=5", "epochs=1")
        .replace(
            'load_images("digits", "train")', 'load_images("digits", "train", max_examples=256)'
        )
    )
    assert small != block, "the README example changed shape; update this test"
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    model, features = namespace["model"], namespace["features"]
    assert features.shape == (360, 8 * 4)
    assert int(model.queue.pointer.numpy()) == (256 // 128 * 128) % 1024

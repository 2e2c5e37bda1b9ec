"""tfascl-eval --protocol=neighbors: nearest training images of test images, as a PNG."""

import json

import numpy as np
import pytest
from PIL import Image
from test_eval import make_run, run_app

from tfascl.evaluation import EvalInputError, embed_images, evaluate, load_encoder, load_labelled
from tfascl.evaluation.protocols import nearest_neighbors


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFASCL_CACHE", str(tmp_path / "cache"))


def brute_force(bank, queries, k):
    """Cosine similarities in float64 and a full sort: the reference for nearest_neighbors."""
    bank = np.asarray(bank, np.float64)
    queries = np.asarray(queries, np.float64)
    sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        bank / np.linalg.norm(bank, axis=1, keepdims=True)
    ).T
    order = np.array([sorted(range(len(bank)), key=lambda j: (-row[j], j)) for row in sims])
    top = order[:, :k]
    return top, np.take_along_axis(sims, top, axis=1)


def test_nearest_neighbors_against_float64_brute_force():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 6)).astype(np.float32) * rng.uniform(0.1, 5, (40, 1))
    bank[7] = bank[3] * 2  # exactly the same direction: a tie, the lower index first
    queries = rng.normal(size=(9, 6)).astype(np.float32)
    queries[0] = bank[3]
    indices, sims = nearest_neighbors(bank, queries, k=5, chunk_size=4)
    expected, expected_sims = brute_force(bank, queries, 5)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-6)
    assert list(indices[0][:2]) == [3, 7] and sims[0][0] == pytest.approx(1.0, abs=1e-6)
    assert nearest_neighbors(bank[:3], queries, k=5)[0].shape == (9, 3)  # k clipped


def test_neighbors_picture_and_results(tmp_path, capsys):
    model_dir = make_run(tmp_path / "run", metrics=False)
    plots_dir = tmp_path / "pictures"
    run_app(
        [
            "--protocol=neighbors",
            f"--model_dir={model_dir}",
            "--max_train_examples=120",
            "--max_test_examples=30",
            "--neighbor_queries=4",
            "--neighbor_k=3",
            "--seed=1",
            f"--plots_dir={plots_dir}",
        ]
    )
    out = capsys.readouterr().out
    picture = plots_dir / "neighbors.png"
    assert f"picture: {picture}" in out and "same class fraction" in out
    with Image.open(picture) as image:
        # (k + 1) cells of 1.5 inches at 100 dpi; 4 rows of 1.5 inches plus the titles.
        assert image.size[0] == 600 and image.size[1] >= 700
        pixels = np.asarray(image.convert("RGB"))
    entry = json.loads((model_dir / "results.json").read_text())["neighbors"]
    assert entry["protocol"] == "neighbors" and entry["picture"] == str(picture)
    assert entry["settings"]["k"] == 3 and entry["settings"]["num_queries"] == 4

    # Independently: the same features, brute-force neighbours, the fractions.
    encoder = load_encoder(model_dir, None)
    train = load_labelled("digits", "train", max_examples=120, seed=1)
    test = load_labelled("digits", "test", max_examples=30, seed=1)
    bank = embed_images(encoder, train.images)
    queries = embed_images(encoder, test.images)
    top, sims = brute_force(bank, queries, 3)
    same = train.labels[top] == test.labels[:, None]
    assert entry["metrics"]["same_class_fraction"] == pytest.approx(same.mean(), abs=1e-9)
    shown = [row["test_index"] for row in entry["shown"]]
    assert len(set(shown)) == 4 and shown == sorted(shown)
    assert entry["metrics"]["same_class_fraction_shown"] == pytest.approx(same[shown].mean())
    for row in entry["shown"]:
        q = row["test_index"]
        assert row["label"] == test.labels[q]
        assert [n["train_index"] for n in row["neighbors"]] == list(top[q])
        assert [n["label"] for n in row["neighbors"]] == list(train.labels[top[q]])
        np.testing.assert_allclose([n["similarity"] for n in row["neighbors"]], sims[q], atol=1e-5)
    # Both frame colours are drawn when both kinds of neighbour are shown.
    blue = np.all(np.abs(pixels.astype(int) - [31, 119, 180]) <= 2, axis=-1).sum()  # tab:blue
    orange = np.all(np.abs(pixels.astype(int) - [255, 127, 14]) <= 2, axis=-1).sum()
    assert (blue > 0) == bool(same[shown].any())
    assert (orange > 0) == bool((~same[shown]).any())

    # Seeded: the same call pictures the same test images and neighbours.
    again = evaluate(
        "neighbors",
        model_dir=model_dir,
        dataset="digits",
        max_train_examples=120,
        max_test_examples=30,
        neighbor_queries=4,
        neighbor_k=3,
        seed=1,
        plots_dir=tmp_path / "again",
        write=False,
    )
    assert again["shown"] == entry["shown"]
    with pytest.raises(EvalInputError, match=r"^--neighbor_queries=0: must be >= 1"):
        run_app(["--protocol=neighbors", f"--model_dir={model_dir}", "--neighbor_queries=0"])

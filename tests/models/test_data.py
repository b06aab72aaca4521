"""Datasets, the text corpus and user-file loaders: splits, normalization, fingerprints, errors."""

import gzip

import numpy as np
import pytest

from models import datasets, file_loaders, text_corpus


def test_split_indices_are_disjoint_and_cover_everything():
    train, valid, test = datasets.split_indices(100, valid=15, test=20)
    assert (len(train), len(valid), len(test)) == (65, 15, 20)
    assert len(set(train) | set(valid) | set(test)) == 100
    with pytest.raises(ValueError, match="smaller than n"):
        datasets.split_indices(10, valid=5, test=5)


@pytest.mark.parametrize("loader", [datasets.digits, datasets.synthetic_regression])
def test_normalization_uses_train_statistics_only(loader):
    data = loader()
    x_train = np.asarray(data.x_train).reshape(len(data.x_train), -1)
    varying = x_train.std(axis=0) > 1e-3
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x_train.std(axis=0)[varying], 1.0, atol=1e-3)
    x_valid = np.asarray(data.x_valid).reshape(len(data.x_valid), -1)
    assert np.abs(x_valid.mean(axis=0)).max() > 1e-3  # not re-centred on valid


def test_fingerprints_are_stable_and_content_sensitive():
    assert datasets.digits().fingerprint == datasets.digits.__wrapped__().fingerprint
    a = np.arange(6.0)
    assert datasets.fingerprint(a) == datasets.fingerprint(a.copy())
    assert datasets.fingerprint(a) != datasets.fingerprint(a + 1e-6)
    assert datasets.fingerprint(a) != datasets.fingerprint(a.reshape(2, 3))


def test_mnist1d_is_generated_offline_with_fixed_splits_and_restores_numpy_rng():
    before = datasets.mnist1d()
    datasets.mnist1d.cache_clear()
    np.random.seed(7)
    expected_next = np.random.RandomState(7).rand()
    data = datasets.mnist1d()  # generated again here (the generator seeds numpy's global RNG)
    assert np.random.rand() == expected_next
    assert data.info()["split_sizes"] == {"train": 3500, "valid": 500, "test": 1000}
    assert data.x_train.shape[1:] == (40, 1) and data.num_classes == 10
    assert data.fingerprint == before.fingerprint


def test_text_corpus_is_fixed_contiguous_and_round_trips():
    corpus = text_corpus.stdlib_corpus()
    info = corpus.info()
    assert info["sources"] == list(text_corpus.STDLIB_FILES)
    sizes = info["split_sizes"]
    assert sizes["train"] > 8 * sizes["valid"] > 0 and abs(sizes["valid"] - sizes["test"]) <= 1
    text = "def f(x):\n    return x  # ok\n"
    assert text_corpus.decode(text_corpus.encode(text)) == text
    assert text_corpus.decode(text_corpus.encode("é\t")) == "??"
    train = np.asarray(corpus.tokens("train"))
    assert train.min() >= 0 and train.max() < corpus.vocab_size
    assert "def " in corpus.decode(train[:2000])
    with pytest.raises(FileNotFoundError, match="no_such_file.py"):
        text_corpus.file_corpus(["/nonexistent/no_such_file.py"])


def _write_idx(path, array, type_byte, compress=False):
    header = bytes([0, 0, type_byte, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    payload = header + array.astype(np.dtype(file_loaders.IDX_DTYPES[type_byte])).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


def test_mnist_idx_round_trip_and_dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, size=40, dtype=np.uint8)
    for key, stem in file_loaders.MNIST_FILES.items():
        array = images if key.startswith("x") else labels
        _write_idx(tmp_path / (stem + ".gz"), array, 0x08, compress=True)
    np.testing.assert_array_equal(
        file_loaders.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz")), images
    )
    data = file_loaders.mnist_idx_dataset(str(tmp_path), valid_size=10)
    assert data.x_train.shape == (30, 6, 5, 1) and data.x_valid.shape == (10, 6, 5, 1)
    assert data.num_classes == 3 and data.x_test.shape == (40, 6, 5, 1)
    floats = np.linspace(-1, 1, 12).reshape(3, 4)
    _write_idx(tmp_path / "f.idx", floats, 0x0D)
    np.testing.assert_allclose(file_loaders.read_idx(str(tmp_path / "f.idx")), floats, rtol=1e-6)


def test_malformed_or_missing_idx_files_name_the_path_and_the_expectation(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        file_loaders.read_idx(str(tmp_path / "missing.idx"))
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"bad.idx.*not an IDX file.*magic bytes"):
        file_loaders.read_idx(str(bad))
    short = tmp_path / "short.idx"
    _write_idx(short, np.zeros((4, 4), np.uint8), 0x08)
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"short.idx.*shape \(4, 4\).*13 bytes"):
        file_loaders.read_idx(str(short))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*four MNIST IDX"):
        file_loaders.mnist_idx_dataset(str(tmp_path))


def test_npz_dataset_and_its_errors(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(50, 3)),
        y_train=rng.integers(0, 4, 50),
        x_test=rng.normal(size=(20, 3)),
        y_test=rng.integers(0, 4, 20),
    )
    data = file_loaders.npz_dataset(str(path))
    assert data.name == "mine" and data.num_classes == 4
    assert (len(data.x_train), len(data.x_valid), len(data.x_test)) == (45, 5, 20)
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, x_train=np.zeros((3, 2)), y_train=np.zeros(3))
    with pytest.raises(ValueError, match=r"incomplete.npz.*\['x_test', 'y_test'\]"):
        file_loaders.npz_dataset(str(incomplete))
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match="text.npz.*not a readable .npz"):
        file_loaders.npz_dataset(str(not_npz))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        file_loaders.npz_dataset(str(tmp_path / "nope.npz"))


def test_optional_adapters_fail_clearly_when_their_library_is_absent():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow_datasets"):
            file_loaders.tfds_dataset("mnist")
    try:
        import datasets as _  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="datasets"):
            file_loaders.huggingface_dataset("mnist")

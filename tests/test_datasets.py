import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CPU, write_npz
from trainables.datasets import (
    DatasetNotFoundError,
    check_dataset_spec,
    list_datasets,
    load_dataset,
)
from trainables.splits import validation_split
from trainables.loader import make_loader
from contract.registry import UnknownEntryError


def test_registry_lists_every_dataset():
    assert {"cifar10", "cifar100", "svhn", "imagenet", "digits", "npz:PATH", "folder:PATH"} <= set(list_datasets())


def test_digits_fixed_split(digits):
    assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
    assert digits.x_train.dtype == np.uint8 and digits.x_train.max() == 255
    assert digits.num_classes == 10 and digits.in_channels == 1
    assert np.bincount(digits.y_test).min() >= 35  # stratified: every class in the test set
    again = load_dataset("digits")
    assert np.array_equal(again.x_train, digits.x_train) and np.array_equal(again.y_test, digits.y_test)
    # train and test are disjoint images of sklearn's set
    from sklearn.datasets import load_digits

    total = load_digits().images.shape[0]
    assert len(digits.y_train) + len(digits.y_test) == total


def test_validation_split_is_stratified_seeded_and_disjoint(digits):
    a = validation_split(digits.y_train, 0.2, seed=3)
    b = validation_split(digits.y_train, 0.2, seed=3)
    c = validation_split(digits.y_train, 0.2, seed=4)
    assert np.array_equal(a.val_ids, b.val_ids)
    assert not np.array_equal(a.val_ids, c.val_ids)
    assert len(a.val_ids) == round(0.2 * 1437)
    assert np.intersect1d(a.train_ids, a.val_ids).size == 0
    assert np.array_equal(np.sort(np.concatenate([a.train_ids, a.val_ids])), np.arange(1437))
    # class proportions within one example of the training set's
    expected = np.bincount(digits.y_train) * len(a.val_ids) / 1437
    assert np.abs(np.bincount(digits.y_train[a.val_ids]) - expected).max() <= 1
    assert len(validation_split(digits.y_train, 100, seed=0).val_ids) == 100
    assert len(validation_split(digits.y_train, 0, seed=0).val_ids) == 0


def test_label_noise_flips_exactly_p_of_the_training_split_to_other_classes(digits, digits_split, fast_recipe):
    from trainables.datasets import dataset_fingerprint
    from trainables.splits import label_noise_seed, with_label_noise
    from trainables.teacher import teacher_inputs

    seed, before = label_noise_seed(0, 0.3), digits.y_train.copy()
    noisy = with_label_noise(digits, digits_split.train_ids, 0.3, seed)
    assert np.array_equal(digits.y_train, before)  # the original keeps its labels
    changed = np.flatnonzero(noisy.y_train != digits.y_train)
    assert len(changed) == round(0.3 * len(digits_split.train_ids))  # the realised rate is P: never the same class
    assert np.isin(changed, digits_split.train_ids).all()  # validation labels stay clean
    assert np.array_equal(noisy.y_test, digits.y_test) and noisy.y_train.min() >= 0 and noisy.y_train.max() < 10
    # seeded: the same draw again; another seed, another draw
    assert np.array_equal(with_label_noise(digits, digits_split.train_ids, 0.3, seed).y_train, noisy.y_train)
    assert not np.array_equal(with_label_noise(digits, digits_split.train_ids, 0.3, seed + 1).y_train, noisy.y_train)
    # a copy: the original's labels, device cache and fingerprint untouched; the images shared
    assert noisy is not digits and noisy._device_cache is not digits._device_cache and noisy.x_train is digits.x_train
    assert noisy.mean == digits.mean and not hasattr(noisy, "_fingerprint")
    assert dataset_fingerprint(noisy) != dataset_fingerprint(digits)
    # so a teacher of the noisy labels has another artifact key (the split is the clean one for both)
    keys = [teacher_inputs(d, digits_split, arch="small_cnn", recipe=fast_recipe, seed=0) for d in (digits, noisy)]
    assert keys[0]["fingerprint"] != keys[1]["fingerprint"]
    # the flipped classes spread over every other class
    assert len(np.unique(noisy.y_train[changed] - digits.y_train[changed])) > 5
    # rate 0: the dataset itself; rates outside [0, 1) refused
    assert with_label_noise(digits, digits_split.train_ids, 0.0, seed) is digits
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            with_label_noise(digits, digits_split.train_ids, rate, seed)
    # the seed of a sweep's draw: the split seed and P, never the replicate
    assert label_noise_seed(0, 0.3) == label_noise_seed(0, 0.3) != label_noise_seed(1, 0.3) != label_noise_seed(0, 0.4)


def test_label_noise_on_a_streaming_dataset_is_a_clear_error(tmp_path):
    from trainables.splits import with_label_noise

    write_image_folder(tmp_path / "imagenet")
    data = load_dataset("imagenet", tmp_path, image_size=8)
    assert with_label_noise(data, np.arange(6), 0.0, 0) is data  # clean labels work on any dataset
    with pytest.raises(ValueError, match="streaming"):
        with_label_noise(data, np.arange(6), 0.2, 0)


@pytest.mark.parametrize("val_size", [1.5, -0.1, 5, 1437])
def test_validation_split_rejects_bad_sizes(digits, val_size):
    with pytest.raises(ValueError, match="val_size"):
        validation_split(digits.y_train, val_size, seed=0)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(UnknownEntryError, match="unknown dataset 'cifar11'.*cifar10"):
        load_dataset("cifar11")
    with pytest.raises(UnknownEntryError):
        check_dataset_spec("cifar11")
    with pytest.raises(DatasetNotFoundError, match="npz dataset file not found"):
        check_dataset_spec("npz:/nonexistent/file.npz")


def test_npz_color_and_grayscale(tmp_path):
    arrays = write_npz(tmp_path / "rgb.npz")
    data = load_dataset(f"npz:{tmp_path / 'rgb.npz'}")
    assert np.array_equal(data.x_train, arrays["x_train"]) and data.num_classes == 4
    assert data.name == f"npz:{tmp_path / 'rgb.npz'}"
    # channel means come from the training images only
    assert data.mean == pytest.approx(tuple(arrays["x_train"].mean(axis=(0, 1, 2)) / 255))
    write_npz(tmp_path / "gray.npz", shape=(8, 8))
    assert load_dataset(f"npz:{tmp_path / 'gray.npz'}").x_train.shape == (40, 8, 8, 1)


def test_npz_bad_content_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="missing arrays"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    arrays = write_npz(tmp_path / "float.npz")
    np.savez(tmp_path / "float.npz", **{**arrays, "x_train": arrays["x_train"] / 255.0})
    with pytest.raises(ValueError, match="uint8"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")


# ---- torchvision formats, written small -------------------------------------------------------


def _cifar_images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _write_cifar_batch(path, images, labels, label_key):
    # The release's layout: one row per image, the R, G and B 32x32 planes one after another.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with open(path, "wb") as handle:
        pickle.dump({"data": rows, label_key: list(map(int, labels)), "batch_label": "tiny"}, handle)


def write_cifar10(root, per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images = []
    for i in range(1, 6):
        images = _cifar_images(per_batch, seed=i)
        _write_cifar_batch(folder / f"data_batch_{i}", images, np.arange(per_batch) % 10, "labels")
        train_images.append(images)
    test = _cifar_images(4, seed=9)
    _write_cifar_batch(folder / "test_batch", test, [3, 1, 4, 1], "labels")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle)
    return np.concatenate(train_images), test


def test_cifar10_reads_the_release_format(tmp_path):
    train, test = write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, verify=False)
    # ids follow the release's order: batch 1 first, then 2..5
    assert np.array_equal(data.x_train, train) and np.array_equal(data.x_test, test)
    assert data.y_test.tolist() == [3, 1, 4, 1] and data.num_classes == 10
    assert data.augmentation.crop_padding == 4 and data.augmentation.flip


def test_cifar10_checksums_catch_files_that_are_not_the_release(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="fail the release's md5 check.*--no-verify"):
        load_dataset("cifar10", tmp_path)


# ---- downloads: on by default on the command lines, never with --offline; no network here ------

# torchvision class, the files it reads (relative to the data dir), and a tiny copy's writer
RELEASES = {
    "cifar10": ("CIFAR10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5",
                            "cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"]),
    "cifar100": ("CIFAR100", ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"]),
    "svhn": ("SVHN", ["train_32x32.mat", "test_32x32.mat"]),
}


def _names_every_file(message, root, files):
    for relative in files:
        folder, _, name = str(root / relative).rpartition("/")
        assert folder in message and name in message, (relative, message)


@pytest.fixture
def download_attempts(monkeypatch):
    """Every torchvision download attempt, recorded; each fails as it does without a network."""
    import urllib.error

    from torchvision import datasets as tvd

    attempts = []

    def no_network(self):
        attempts.append((type(self).__name__, self.root))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    for cls in ("CIFAR10", "CIFAR100", "SVHN"):
        monkeypatch.setattr(getattr(tvd, cls), "download", no_network)
    return attempts


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_a_missing_dataset_is_downloaded_and_a_failed_download_says_which_files_to_put_where(tmp_path, name, download_attempts):
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(name, root, download=True)
    assert len(download_attempts) == 1 and download_attempts[0][1] == str(root)  # it tried, into the data dir
    message = str(error.value)
    assert f"{name}: not found under {root}, and downloading it failed (URLError" in message
    assert "name resolution" in message and "--offline" in message
    _names_every_file(message, root, RELEASES[name][1])


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_offline_a_missing_dataset_is_never_downloaded_and_the_error_names_the_files(tmp_path, name, download_attempts):
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(name, root, download=False)
    assert download_attempts == []
    message = str(error.value)
    assert f"{name}: not found under {root}, and downloading is off (--offline)" in message
    _names_every_file(message, root, RELEASES[name][1])
    assert not root.exists()  # nothing written


def test_a_download_that_works_is_used(tmp_path, monkeypatch):
    from torchvision import datasets as tvd

    attempts = []

    def fetch(self):  # what a download leaves behind: the release's files in the data dir
        attempts.append(self.root)
        if not (tmp_path / "cifar-10-batches-py").exists():
            fetch.arrays = write_cifar10(tmp_path)

    monkeypatch.setattr(tvd.CIFAR10, "download", fetch)
    data = load_dataset("cifar10", tmp_path, download=True, verify=False)
    train, test = fetch.arrays
    assert attempts and np.array_equal(data.x_train, train) and np.array_equal(data.x_test, test)


def _cli(kind):
    if kind == "sweep":
        from sweep.run import main
    else:
        from trainables.teacher import main
    return main


@pytest.mark.parametrize("kind", ["sweep", "teacher"])
@pytest.mark.parametrize("flags,attempted", [([], True), (["--download"], True), (["--offline"], False)])
def test_the_command_lines_download_unless_offline(tmp_path, monkeypatch, capsys, download_attempts, kind, flags, attempted):
    """Downloading is the default; --offline turns it off; --download, deprecated, changes nothing."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "nodata"
    args = ["--dataset", "cifar10", "--data-dir", str(root), *flags]
    args += ["--storage", str(tmp_path / "runs"), "--profile", "smoke"] if kind == "sweep" else ["--out", "t.pt"]
    with pytest.raises(SystemExit) as exit_:
        _cli(kind)(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert bool(download_attempts) == attempted
    assert ("downloading it failed" if attempted else "downloading is off (--offline)") in err
    assert f"{root}/cifar-10-batches-py/ holding data_batch_1" in err


def test_sweeps_recorded_with_the_old_download_setting_still_resume():
    from sweep.plan import SweepConfig

    old = {**SweepConfig(dataset="cifar10", name="old", storage="runs").to_dict(), "download": True}
    del old["offline"]
    config = SweepConfig.from_dict(old)
    assert config.dataset == "cifar10" and config.offline is False  # downloading, as the old sweep did


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = _cifar_images(10, 1), _cifar_images(3, 2)
    for name, images, labels in (("train", train, np.arange(10) * 7), ("test", test, [99, 0, 50])):
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": rows, "fine_labels": list(map(int, labels)), "coarse_labels": [0] * len(images)}, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, handle)
    data = load_dataset("cifar100", tmp_path, verify=False)
    assert data.num_classes == 100 and np.array_equal(data.x_train, train)
    assert data.y_train.tolist() == list(range(0, 70, 7)) and data.y_test.tolist() == [99, 0, 50]


def test_svhn_reads_the_mat_format(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    expected = {}
    for split, n in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = (np.arange(n) % 10) + 1  # the release labels digits 1..10, with 10 meaning 0
        # The release stores X as (32, 32, 3, N) and y as (N, 1).
        savemat(tmp_path / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None].astype(np.uint8)})
        expected[split] = (images, labels % 10)
    data = load_dataset("svhn", tmp_path, verify=False)
    assert np.array_equal(data.x_train, expected["train"][0])
    assert np.array_equal(data.y_train, expected["train"][1]) and data.y_train.max() == 9
    assert np.array_equal(data.x_test, expected["test"][0])
    assert not data.augmentation.flip  # mirrored house numbers are other numbers
    with pytest.raises(DatasetNotFoundError, match="svhn"):
        load_dataset("svhn", tmp_path / "elsewhere")


def write_image_folder(root, classes=("ants", "bees"), per_class=3, size=12):
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for label, name in enumerate(classes):
            (root / part / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((size, size, 3), 40 + 150 * label, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"img{i}.png")


def test_imagenet_image_folder_streams_batches_with_ids(tmp_path):
    write_image_folder(tmp_path / "imagenet")
    data = load_dataset("imagenet", tmp_path, image_size=8)
    assert data.streaming and data.num_classes == 2 and data.num_train == 6
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1]  # ImageFolder's sorted order defines the ids
    loader = make_loader(data, "train", np.array([0, 4, 5]), 2, train=True, device=CPU, seed=0, num_workers=0)
    batches = list(loader)
    assert len(loader) == 2 and [len(b.y) for b in batches] == [2, 1]
    ids = torch.cat([b.ids for b in batches]).tolist()
    assert sorted(ids) == [0, 4, 5]
    for batch in batches:
        assert batch.x.shape[1:] == (3, 8, 8) and batch.x.dtype == torch.float32
        assert batch.y.tolist() == [data.y_train[i] for i in batch.ids.tolist()]
    # evaluation: in order, deterministic
    test_loader = make_loader(data, "test", np.arange(6), 4, train=False, device=CPU, num_workers=0)
    first, second = list(test_loader), list(test_loader)
    assert torch.cat([b.ids for b in first]).tolist() == list(range(6))
    assert torch.equal(first[0].x, second[0].x)


def test_imagenet_missing_tree_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="never downloaded"):
        load_dataset("imagenet", tmp_path)


def _write_folder(root, images, labels, part, classes=("zero", "one", "two")):
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / part / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(folder / f"{i:04d}.png")


def test_an_image_folder_tree_reads_as_the_images_it_holds(tmp_path):
    """``folder:PATH``: train/<class>/<image> and test/<class>/<image>, classes in sorted folder order,
    images in sorted file order within a class; PNG is lossless, so the arrays come back exactly."""
    digits = load_dataset("digits")
    keep = lambda y, n: np.flatnonzero(y < 3)[:n]  # noqa: E731 -- three classes, a few images each
    train, test = keep(digits.y_train, 60), keep(digits.y_test, 15)
    names = ("zero", "one", "two")  # sorted: "one" < "two" < "zero", so labels are renumbered
    _write_folder(tmp_path / "tree", digits.x_train[train], digits.y_train[train], "train", names)
    _write_folder(tmp_path / "tree", digits.x_test[test], digits.y_test[test], "test", names)
    spec = f"folder:{tmp_path / 'tree'}"
    check_dataset_spec(spec)
    data = load_dataset(spec)
    new_label = {old: sorted(names).index(name) for old, name in enumerate(names)}
    order = sorted(range(len(train)), key=lambda i: (new_label[int(digits.y_train[train][i])], i))
    assert data.num_classes == 3 and data.x_train.shape == (60, 8, 8, 1) and data.x_test.shape == (15, 8, 8, 1)
    np.testing.assert_array_equal(data.x_train, digits.x_train[train][order])
    np.testing.assert_array_equal(data.y_train, [new_label[int(y)] for y in digits.y_train[train][order]])
    assert data.name == spec

    # bad trees: one clear error each, before any compute
    with pytest.raises(DatasetNotFoundError, match="image folder not found"):
        check_dataset_spec(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "notest" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no test folder"):
        load_dataset(f"folder:{tmp_path / 'notest'}")
    from PIL import Image

    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "tree" / "train" / "one" / "9999.png")
    with pytest.raises(ValueError, match="images differ in size .* is 8x8, .*9999.png is 9x9"):
        load_dataset(spec)

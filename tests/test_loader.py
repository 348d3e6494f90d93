import numpy as np
import pytest
import torch

from conftest import CPU
from trainables.loader import DeviceLoader, device_images, make_loader, random_crop_flip


def normalised(dataset, images):
    mean = np.array(dataset.mean, dtype=np.float32)
    std = np.array(dataset.std, dtype=np.float32)
    return ((images.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)


def test_eval_batches_are_the_normalised_images_in_order(digits):
    ids = np.array([5, 0, 17, 3, 1000])
    loader = make_loader(digits, "train", ids, 2, train=False, device=CPU)
    batches = list(loader)
    assert [b.ids.tolist() for b in batches] == [[5, 0], [17, 3], [1000]]
    x = torch.cat([b.x for b in batches]).numpy()
    assert np.allclose(x, normalised(digits, digits.x_train[ids]), atol=1e-5)
    assert torch.cat([b.y for b in batches]).tolist() == digits.y_train[ids].tolist()


def test_test_part_reads_the_test_images(digits):
    batch = next(iter(make_loader(digits, "test", np.arange(4), 4, train=False, device=CPU)))
    assert np.allclose(batch.x.numpy(), normalised(digits, digits.x_test[:4]), atol=1e-5)
    assert batch.y.tolist() == digits.y_test[:4].tolist()


def test_train_epoch_uses_every_id_once_in_near_equal_batches(digits):
    ids = np.arange(0, 1437, 3)  # a pruned subset is just ids
    loader = make_loader(digits, "train", ids, 64, train=True, device=CPU, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == int(np.ceil(len(ids) / 64))
    sizes = [len(b.ids) for b in batches]
    assert max(sizes) <= 64 and max(sizes) - min(sizes) <= 1
    seen = torch.cat([b.ids for b in batches]).numpy()
    assert np.array_equal(np.sort(seen), ids)
    for b in batches:
        assert b.y.tolist() == digits.y_train[b.ids.numpy()].tolist()


def test_subset_smaller_than_a_batch_still_trains(digits):
    batches = list(make_loader(digits, "train", np.array([3, 9, 11]), 128, train=True, device=CPU))
    assert len(batches) == 1 and sorted(batches[0].ids.tolist()) == [3, 9, 11]


def test_deterministic_given_a_seed_and_fresh_each_epoch(digits):
    def epochs(seed, n=2):
        loader = make_loader(digits, "train", np.arange(200), 50, train=True, device=CPU, seed=seed)
        return [[(b.ids.clone(), b.x.clone()) for b in loader] for _ in range(n)]

    a, b, c = epochs(7), epochs(7), epochs(8)
    for ea, eb in zip(a, b):
        for (ia, xa), (ib, xb) in zip(ea, eb):
            assert torch.equal(ia, ib) and torch.equal(xa, xb)
    assert not torch.equal(a[0][0][0], a[1][0][0])  # a new order every epoch
    assert not torch.equal(a[0][0][0], c[0][0][0])  # another seed, another order


def test_every_augmented_image_is_a_crop_of_its_padded_original(digits):
    """digits: padding 1, no flip. Each training image must be one of the 9 shifted copies."""
    loader = make_loader(digits, "train", np.arange(300), 100, train=True, device=CPU, seed=0)
    offsets_seen = set()
    for batch in loader:
        originals = digits.x_train[batch.ids.numpy()]
        padded = np.pad(originals, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = batch.x.numpy()
        for i in range(len(x)):
            matches = [
                (dy, dx)
                for dy in range(3)
                for dx in range(3)
                if np.allclose(x[i], normalised(digits, padded[i : i + 1, dy : dy + 8, dx : dx + 8])[0], atol=1e-5)
            ]
            assert matches, "augmented image is not a crop of the padded original"
            offsets_seen.update(matches)
    assert len(offsets_seen) == 9  # all translations occur


def test_random_crop_flip_matches_a_per_image_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    dy = torch.tensor([0, 4, 2, 1, 3, 0])
    dx = torch.tensor([4, 0, 2, 3, 1, 0])
    flip = torch.tensor([True, False, True, False, True, True])
    out = random_crop_flip(torch.from_numpy(images), 2, dy, dx, flip).numpy()
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(6):
        crop = padded[i, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7]
        expected = crop[:, ::-1] if flip[i] else crop
        assert np.array_equal(out[i], expected)
    flipped_only = random_crop_flip(torch.from_numpy(images), 0, dy, dx, flip).numpy()
    assert np.array_equal(flipped_only[0], images[0, :, ::-1]) and np.array_equal(flipped_only[1], images[1])


def test_channels_last_batches(digits):
    batch = next(iter(make_loader(digits, "train", np.arange(8), 8, train=True, device=CPU, channels_last=True)))
    assert batch.x.is_contiguous(memory_format=torch.channels_last)


def test_dataset_is_uploaded_once_per_device(digits):
    assert device_images(digits, "train", CPU) is device_images(digits, "train", CPU)


def test_bad_ids_are_rejected(digits):
    data = device_images(digits, "train", CPU)
    with pytest.raises(ValueError, match="non-empty"):
        DeviceLoader(data, np.array([], dtype=np.int64), 8, train=True)
    with pytest.raises(ValueError, match=r"\[0, 1437\)"):
        DeviceLoader(data, np.array([0, 1437]), 8, train=True)

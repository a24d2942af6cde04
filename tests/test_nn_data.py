"""Tests of selfdistill.nn.data: splits, normalization, label noise, augmentation, CIFAR from a folder."""

import random
import warnings

import numpy as np
import pytest
import torch
from cifar_files import fake_cifar10, fake_cifar100

from selfdistill.nn import data as data_module
from selfdistill.nn.data import RandomCropFlip, add_symmetric_label_noise, load_data

# ---------------------------------------------------------------- digits


def test_digits_shapes_sizes_dtypes():
    d = load_data("digits")
    assert (d.num_train, d.num_val, d.num_test) == (1293, 144, 360)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.augment is None
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert tuple(d.x_val.shape) == (144, 1, 8, 8)
    # standardized with the training split's scalar mean / std
    assert abs(d.x_train.mean().item()) < 1e-5
    assert d.x_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_digits_splits_partition_the_data_and_never_overlap():
    from sklearn.datasets import load_digits

    d = load_data("digits", seed=3)
    raw = load_digits().images.reshape(1797, 64)
    # undo the scalar standardization: it is affine and increasing, and raw pixels span 0..16
    parts = [d.x_train, d.x_val, d.x_test]
    all_std = torch.cat([p.reshape(p.shape[0], 64) for p in parts]).double().numpy()
    assert raw.min() == 0 and raw.max() == 16
    recovered = np.rint((all_std - all_std.min()) / (all_std.max() - all_std.min()) * 16)
    rows = {tuple(r) for r in recovered}
    assert len(rows) == 1797 == len({tuple(r) for r in raw})
    assert rows == {tuple(r) for r in raw}
    # every image still carries its own label
    label_of = {tuple(r): t for r, t in zip(raw, load_digits().target, strict=True)}
    labels = torch.cat([d.y_train, d.y_val, d.y_test]).numpy()
    assert all(label_of[tuple(r)] == t for r, t in zip(recovered, labels, strict=True))


def test_digits_split_is_seeded_and_stratified():
    a, b, c = load_data("digits", seed=1), load_data("digits", seed=1), load_data("digits", seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    counts = np.bincount(a.y_test.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of ~180 per class


def test_val_fraction_zero_gives_empty_validation():
    d = load_data("digits", val_fraction=0.0)
    assert d.num_val == 0 and d.num_train == 1437 and tuple(d.x_val.shape) == (0, 1, 8, 8)


def test_label_noise_only_on_train_exact_count_and_always_a_different_class():
    clean = load_data("digits", seed=4)
    noisy = load_data("digits", seed=4, label_noise=0.3)
    assert torch.equal(noisy.clean_y_train, clean.y_train)
    assert torch.equal(noisy.y_val, clean.y_val) and torch.equal(noisy.y_test, clean.y_test)
    assert torch.equal(noisy.x_train, clean.x_train)
    changed = noisy.y_train != noisy.clean_y_train
    assert torch.equal(changed, noisy.noise_mask)
    assert int(changed.sum()) == round(0.3 * 1293)
    # the new class is uniform over the 9 others: every offset 1..9 occurs with a plausible frequency
    offsets = ((noisy.y_train - noisy.clean_y_train) % 10)[changed].numpy()
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 20


def test_add_symmetric_label_noise_rejects_bad_fraction():
    with pytest.raises(ValueError, match="label_noise"):
        add_symmetric_label_noise(np.zeros(5, dtype=np.int64), 3, 1.5, 0)
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\)"):  # 1: every label is wrong
        add_symmetric_label_noise(np.zeros(5, dtype=np.int64), 3, 1.0, 0)


def test_subset_takes_the_first_training_examples():
    full = load_data("digits", seed=0)
    small = load_data("digits", seed=0, subset=50)
    assert small.num_train == 50 and torch.equal(small.x_train, full.x_train[:50])
    assert torch.equal(small.x_val, full.x_val) and torch.equal(small.x_test, full.x_test)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "mnist"}, "unknown data set name 'mnist'.*digits.*mnist1d.*cifar10.*cifar100"),
    ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
    ({"name": "digits", "label_noise": -0.1}, "label_noise"),
    ({"name": "digits", "label_noise": 1.0}, r"label_noise must be in \[0, 1\)"),
    ({"name": "digits", "subset": 0}, "subset"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_data(**kwargs)


def test_to_device_and_repr():
    d = load_data("digits", subset=10)
    moved = d.to("cpu")
    assert torch.equal(moved.x_train, d.x_train)
    text = repr(d)
    assert "train=10" in text and "val=144" in text and "tensor(" not in text


# ---------------------------------------------------------------- MNIST-1D


def test_mnist1d_generated_offline_and_global_rng_untouched():
    data_module._MNIST1D_CACHE.clear()  # force a fresh generation
    np.random.seed(123)  # noqa: NPY002 - the legacy global state is what mnist1d touches
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    d = load_data("mnist1d", seed=0)
    assert np.random.random() == expected_np and random.random() == expected_py  # noqa: NPY002
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert d.num_test == 1000 and d.num_train + d.num_val == 4000 and d.num_val == 400
    assert tuple(d.x_train.shape[1:]) == (1, 40)
    assert set(np.unique(d.y_test.numpy())) == set(range(10))
    again = load_data("mnist1d", seed=0)
    assert torch.equal(again.x_train, d.x_train)


# ---------------------------------------------------------------- augmentation


def _naive_candidates(image: torch.Tensor, padding: int, fill: torch.Tensor):
    c, h, w = image.shape
    padded = fill.view(c, 1, 1).expand(c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, padding:padding + h, padding:padding + w] = image
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top:top + h, left:left + w]
            yield crop
            yield crop.flip(-1)


def test_random_crop_flip_outputs_are_crops_of_the_padded_image():
    g_data = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8, generator=g_data)
    fill = (0.5, -1.0, 2.0)
    aug = RandomCropFlip(padding=2, fill=fill)
    out = aug(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    fill_t = torch.tensor(fill)
    for i in range(6):
        assert any(torch.equal(out[i], cand) for cand in _naive_candidates(x[i], 2, fill_t))


def test_random_crop_flip_is_reproducible_and_random():
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    aug = RandomCropFlip(padding=4)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    identity = RandomCropFlip(padding=0, flip=False)(x, torch.Generator().manual_seed(0))
    assert torch.equal(identity, x)


# ---------------------------------------------------------------- CIFAR from a fake folder in the real format


def _expected_normalized(raw_rows, mean, std):
    x = raw_rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    return (x - np.asarray(mean).reshape(1, 3, 1, 1)) / np.asarray(std).reshape(1, 3, 1, 1)


def test_cifar10_from_folder_values_labels_and_augment(tmp_path):
    x, y, xt, yt = fake_cifar10(tmp_path)
    with pytest.warns(UserWarning, match="NOT verified"):
        d = load_data("cifar10", root=tmp_path, val_fraction=0.0, verify_checksums=False)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert (d.num_train, d.num_val, d.num_test) == (40, 0, 10)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    np.testing.assert_allclose(d.x_train.numpy(), _expected_normalized(x, mean, std), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), _expected_normalized(xt, mean, std), rtol=1e-5, atol=1e-5)
    assert np.array_equal(d.y_train.numpy(), y) and np.array_equal(d.y_test.numpy(), yt)
    assert isinstance(d.augment, RandomCropFlip)
    # padding is black in pixel space: (0 - mean) / std per channel
    np.testing.assert_allclose(d.augment.fill, [-m / s for m, s in zip(mean, std, strict=True)], rtol=1e-6)
    out = d.augment(d.x_train[:4], torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32)


def test_cifar10_validation_comes_from_train_only(tmp_path):
    fake_cifar10(tmp_path, per_batch=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_data("cifar10", root=tmp_path, val_fraction=0.2, seed=0, verify_checksums=False)
        full = load_data("cifar10", root=tmp_path, val_fraction=0.0, verify_checksums=False)
    assert (d.num_train, d.num_val, d.num_test) == (80, 20, 10)
    assert torch.equal(d.x_test, full.x_test)
    train_rows = {r.numpy().tobytes() for r in full.x_train}
    assert all(r.numpy().tobytes() in train_rows for r in d.x_val)


def test_cifar100_from_folder_uses_fine_labels(tmp_path):
    x, y, xt, yt = fake_cifar100(tmp_path)
    with pytest.warns(UserWarning, match="NOT verified"):
        d = load_data("cifar100", root=tmp_path, val_fraction=0.0, verify_checksums=False)
    assert d.num_classes == 100 and (d.num_train, d.num_test) == (40, 12)
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    np.testing.assert_allclose(d.x_train.numpy(), _expected_normalized(x, mean, std), rtol=1e-5, atol=1e-5)
    assert np.array_equal(d.y_train.numpy(), y) and np.array_equal(d.y_test.numpy(), yt)


def test_cifar_missing_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_data("cifar10", root=tmp_path)
    message = str(info.value)
    assert f"expected {tmp_path / 'cifar-10-batches-py'}/" in message
    for part in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta", "cifar-10-python.tar.gz",
                 "https://www.cs.toronto.edu/~kriz/cifar.html", f"extract it into {tmp_path}"):
        assert part in message
    expected = "cifar-100-python.*train, test, meta.*cifar-100-python.tar.gz"
    with pytest.raises(FileNotFoundError, match=expected):
        load_data("cifar100", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="pass root=") as info:
        load_data("cifar10")
    assert "--data-root" in str(info.value) and "data.root" in str(info.value)  # what a CLI user sets


def test_cifar_missing_single_file_is_named(tmp_path):
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing: data_batch_3"):
        load_data("cifar10", root=tmp_path, verify_checksums=False)


def test_cifar_checksum_mismatch_is_reported_by_default(tmp_path):
    fake_cifar10(tmp_path)
    with pytest.raises(ValueError, match="do not match the official MD5.*verify_checksums=False"):
        load_data("cifar10", root=tmp_path)


def test_tiny_training_pool_falls_back_to_an_unstratified_validation_split(tmp_path):
    # 40 images, 10 classes, val_fraction 0.1 -> 4 validation images: too few to stratify by class
    fake_cifar10(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_data("cifar10", root=tmp_path, val_fraction=0.1, seed=0, verify_checksums=False)
        b = load_data("cifar10", root=tmp_path, val_fraction=0.1, seed=0, verify_checksums=False)
    assert (a.num_train, a.num_val) == (36, 4)
    assert torch.equal(a.x_val, b.x_val)

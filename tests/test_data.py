import gzip
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from mimmia_core import data
from mimmia_core.data import (ArraySource, ImageFolderSource, Subset, load_fashion_mnist, load_image_bytes, load_npz,
                              load_torchvision, open_source, source_spec, to_model_size)

FASHION = next((d for d in data.FASHION_MNIST_DIRS if d.exists()), data.FASHION_MNIST_DIRS[0])


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(payload)


def write_fake_mnist(root, rng, n_train=12, n_test=5, gz=False, sub=""):
    sets = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_stem, lbl_stem = data.FASHION_MNIST_FILES[split]
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / sub / (img_stem + suffix), images, gz)
        write_idx(root / sub / (lbl_stem + suffix), labels, gz)
        sets[split] = images, labels
    return sets


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar(root, name, monkeypatch, rng, per_file=3):
    """Small files in torchvision's CIFAR layout; the class's md5 lists are pointed at them."""
    import torchvision.datasets as tvd
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key, num_classes = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    written = {}
    for fname, _ in cls.train_list + cls.test_list:
        rows = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, num_classes, per_file).tolist()
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": rows, label_key: labels}, f)
        written[fname] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(num_classes)]}, f)
    monkeypatch.setattr(cls, "train_list", [[f, md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})
    train = [written[f] for f, _ in cls.train_list]
    test = [written[f] for f, _ in cls.test_list]
    return ((np.concatenate([t[0] for t in train]), sum((t[1] for t in train), [])),
            (np.concatenate([t[0] for t in test]), sum((t[1] for t in test), [])))


def png_bytes(array, fmt="PNG", **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def write_folder(root, rng, size=(8, 10), n_per_class=3):
    """root/a/0.png ... root/b/2.png, RGB images of size (height, width)."""
    arrays = {}
    for cls in ("b", "a"):
        for i in range(n_per_class):
            a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / cls / f"{i}.png")
            arrays[f"{cls}/{i}.png"] = a
    return arrays


# ---------------------------------------------------------------- Fashion-MNIST
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not available")
def test_real_fashion_mnist():
    train = load_fashion_mnist(FASHION, "train")
    assert len(train) == 60000 and train.images(np.arange(3)).shape == (3, 28, 28, 1)
    assert train.images([0]).dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert train.ids[0] == 0 and train.ids[-1] == 59999
    test = load_fashion_mnist(FASHION, "test")
    assert len(test) == 10000 and np.bincount(test.labels).tolist() == [1000] * 10
    assert test.spec == f"fashion-mnist:test@{FASHION}"


@pytest.mark.parametrize("gz,sub", [(True, ""), (False, ""), (False, "FashionMNIST/raw")])
def test_idx_gz_raw_and_torchvision_layout(tmp_path, gz, sub):
    sets = write_fake_mnist(tmp_path, np.random.default_rng(0), gz=gz, sub=sub)
    for split in ("train", "test"):
        s = load_fashion_mnist(tmp_path, split)
        np.testing.assert_array_equal(s.images(np.arange(len(s)))[..., 0], sets[split][0])
        np.testing.assert_array_equal(s.labels, sets[split][1])
        assert s.name == f"fashion-mnist-{split}"


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(tmp_path, "val")
    write_fake_mnist(tmp_path, np.random.default_rng(0))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="header says shape"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match="cut short"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        load_fashion_mnist(tmp_path, "test")


# ---------------------------------------------------------------- arrays, npz, subsets
def test_npz_round_trip_with_and_without_ids(tmp_path):
    rng = np.random.default_rng(1)
    images, ids, labels = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), np.array([9, 3, 7, 1, 0, 5]), np.arange(6)
    np.savez(tmp_path / "with.npz", images=images, ids=ids, labels=labels)
    np.savez(tmp_path / "without.npz", images=images[..., 0])
    s = load_npz(tmp_path / "with.npz")
    np.testing.assert_array_equal(s.ids, ids)
    np.testing.assert_array_equal(s.images(np.arange(6)), images)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.name == "with" and s.spec == f"npz:{tmp_path / 'with.npz'}"
    t = load_npz(tmp_path / "without.npz")
    assert t.ids.tolist() == list(range(6)) and t.labels is None and t.image_shape == (4, 4, 1)
    np.savez(tmp_path / "bad.npz", pixels=images)
    with pytest.raises(ValueError, match="'images'"):
        load_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz")


def test_array_source_validation():
    ok = np.zeros((3, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        ArraySource(np.zeros((3, 4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        ArraySource(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        ArraySource(ok.astype(np.float32))
    with pytest.raises(ValueError, match="unique"):
        ArraySource(ok, ids=[1, 1, 2])
    with pytest.raises(ValueError, match="unique"):
        ArraySource(ok, ids=[1, 2])
    with pytest.raises(ValueError, match="labels"):
        ArraySource(ok, labels=[0, 1])


def test_subset_order_positions_and_batches():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    s = ArraySource(images, ids=np.arange(100, 110), labels=np.arange(10) % 3)
    sub = Subset(s, [107, 101, 105])
    assert sub.images(np.arange(3))[:, 0, 0, 0].tolist() == [7, 1, 5]
    assert sub.labels.tolist() == [1, 1, 2]
    assert s.positions_of([105, 100]).tolist() == [5, 0]
    with pytest.raises(KeyError, match="1 ids not in the source"):
        s.positions_of([100, 42])
    with pytest.raises(KeyError):
        s.subset([200])
    got = list(sub.batches(2))
    assert [b[0].tolist() for b in got] == [[107, 101], [105]]
    assert np.concatenate([b[1] for b in got])[:, 0, 0, 0].tolist() == [7, 1, 5]
    with pytest.raises(ValueError, match="batch_size"):
        next(s.batches(0))


def test_fingerprint_stable_and_sensitive():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)
    a, b = ArraySource(images.copy()), ArraySource(images.copy())
    assert a.fingerprint() == b.fingerprint()
    changed = images.copy()
    changed[3, 2, 2, 0] ^= 1
    assert ArraySource(changed).fingerprint() != a.fingerprint()
    assert ArraySource(images, ids=np.arange(1, 6)).fingerprint() != a.fingerprint()


# ---------------------------------------------------------------- image folders
def test_image_folder(tmp_path):
    arrays = write_folder(tmp_path, np.random.default_rng(3))
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(arrays["a/0.png"]).save(tmp_path / ".hidden" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    s = ImageFolderSource(tmp_path)
    order = ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png"]
    assert s.relpaths == order and s.ids.tolist() == list(range(6))
    assert s.paths[4] == tmp_path / "b" / "1.png"
    assert s.mode == "RGB" and s.image_shape == (8, 10, 3)
    assert s.classes == ["a", "b"] and s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(s.images([4, 0]), np.stack([arrays["b/1.png"], arrays["a/0.png"]]))
    streamed = list(s.batches(4))
    assert [len(ids) for ids, _ in streamed] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([im for _, im in streamed]), np.stack([arrays[p] for p in order]))
    assert ImageFolderSource(tmp_path).ids.tolist() == s.ids.tolist()  # ids are stable
    assert s.spec == f"folder:{tmp_path}" and open_source(s.spec).fingerprint() == s.fingerprint()


def test_image_folder_is_lazy_and_checks_sizes(tmp_path):
    rng = np.random.default_rng(4)
    write_folder(tmp_path, rng)
    Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(tmp_path / "b" / "3.png")
    (tmp_path / "b" / "4.png").write_bytes(b"garbage")
    s = ImageFolderSource(tmp_path)  # nothing but the first file is decoded yet
    assert len(s) == 8 and s.images(np.arange(6)).shape == (6, 8, 10, 3)
    with pytest.raises(ValueError, match=r"b/3.png is 9x12 pixels but a/0.png is 10x8"):
        s.images([6])
    with pytest.raises(ValueError, match=r"b/4.png is not an image"):
        s.images([7])
    (tmp_path / "b" / "4.png").unlink()
    resized = ImageFolderSource(tmp_path, mode="L", resize=(5, 5))
    assert resized.images(np.arange(7)).shape == (7, 5, 5, 1)
    assert resized.spec == f"folder:{tmp_path}?mode=L&resize=5x5"
    assert open_source(resized.spec).fingerprint() == resized.fingerprint()


def test_image_folder_grey_flat_and_errors(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderSource(tmp_path)
    with pytest.raises(FileNotFoundError):
        ImageFolderSource(tmp_path / "missing")
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(tmp_path / "one.png")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "x" / "two.jpg", quality=100)
    s = ImageFolderSource(tmp_path)
    assert s.mode == "L" and s.labels is None and s.classes is None  # one file lies in root itself
    assert s.relpaths == ["one.png", "x/two.jpg"]
    assert s.images([0, 1])[:, 0, 0, 0].tolist() == [7, 200]
    with pytest.raises(ValueError, match="mode"):
        ImageFolderSource(tmp_path, mode="CMYK")
    with pytest.raises(ValueError, match="resize"):
        ImageFolderSource(tmp_path, resize=(0, 4))


def test_image_folder_fingerprint_is_content(tmp_path):
    arrays = write_folder(tmp_path, np.random.default_rng(5))
    fp = ImageFolderSource(tmp_path).fingerprint()
    os.utime(tmp_path / "a" / "1.png", (1, 1))
    assert ImageFolderSource(tmp_path).fingerprint() == fp
    assert ImageFolderSource(tmp_path, mode="L").fingerprint() != fp
    a = arrays["a/1.png"].copy()
    a[0, 0, 0] ^= 1
    Image.fromarray(a).save(tmp_path / "a" / "1.png")
    assert ImageFolderSource(tmp_path).fingerprint() != fp


# ---------------------------------------------------------------- torchvision sets
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_fake_data(tmp_path, monkeypatch, name):
    (train_x, train_y), (test_x, test_y) = write_fake_cifar(tmp_path, name, monkeypatch, np.random.default_rng(6))
    train = load_torchvision(name, tmp_path, train=True)
    assert len(train) == len(train_x) and train.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(train.images(np.arange(len(train))), train_x)
    assert train.labels.tolist() == train_y and train.ids.tolist() == list(range(len(train_x)))
    test = open_source(f"{name}:{tmp_path}:test")
    np.testing.assert_array_equal(test.images(np.arange(len(test))), test_x)
    assert test.labels.tolist() == test_y and test.name == f"{name}-test"
    assert source_spec(test) == f"{name}:{tmp_path}:test"
    assert open_source(f"{name}:{tmp_path}").name == f"{name}-train"


def test_torchvision_mnist_layouts_and_errors(tmp_path):
    rng = np.random.default_rng(7)
    mnist = write_fake_mnist(tmp_path, rng, sub="MNIST/raw")
    s = load_torchvision("mnist", tmp_path, train=False)
    np.testing.assert_array_equal(s.images(np.arange(len(s)))[..., 0], mnist["test"][0])
    fashion = write_fake_mnist(tmp_path, rng, sub="FashionMNIST/raw")
    via_tv = load_torchvision("fashion-mnist", tmp_path)
    np.testing.assert_array_equal(via_tv.images(np.arange(len(via_tv)))[..., 0], fashion["train"][0])
    assert via_tv.fingerprint() == load_fashion_mnist(tmp_path).fingerprint()
    with pytest.raises(FileNotFoundError, match="cifar10"):
        load_torchvision("cifar10", tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown torchvision dataset"):
        load_torchvision("imagenet", tmp_path)


# ---------------------------------------------------------------- open_source
def test_open_source_specs(tmp_path):
    write_fake_mnist(tmp_path / "fm", np.random.default_rng(8), gz=True)
    s = open_source(f"fashion-mnist:test@{tmp_path / 'fm'}")
    assert len(s) == 5 and s.name == "fashion-mnist-test"
    assert len(open_source(f"fashion-mnist@{tmp_path / 'fm'}")) == 12
    assert open_source(source_spec(s)).fingerprint() == s.fingerprint()
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 4, 4), np.uint8))
    assert len(open_source(f"npz:{tmp_path / 'x.npz'}")) == 2
    for bad in ("imagenet", "fashion-mnist:val", "fashion-mnistx", "cifar10:", "npz:", "folder:",
                f"folder:{tmp_path}?size=3", f"folder:{tmp_path}?resize=ab"):
        with pytest.raises(ValueError):
            open_source(bad)
    with pytest.raises(ValueError, match="not opened from a spec"):
        source_spec(ArraySource(np.zeros((1, 2, 2), np.uint8)))


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not available")
def test_open_source_default_fashion_mnist():
    s = open_source("fashion-mnist:test")
    assert len(s) == 10000 and source_spec(s) == "fashion-mnist:test"


@pytest.mark.skipif(not data.DEMO_DATA.exists(), reason="demo bundle not built yet")
def test_open_source_demo():
    s = open_source("demo")
    assert s.spec == "demo" and s.image_shape == (28, 28, 1)


# ---------------------------------------------------------------- uploads
def test_load_image_bytes_png_jpeg_garbage():
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image_bytes(png_bytes(rgb), 16, 3), rgb)
    smooth = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.uint8)[:, None, None], (16, 16, 3)).copy()
    jpeg = load_image_bytes(png_bytes(smooth, "JPEG", quality=95), 16, 3)
    assert jpeg.shape == (16, 16, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - smooth).mean() < 3
    with pytest.raises(ValueError, match="not an image"):
        load_image_bytes(b"this is not a picture", 16, 3)
    with pytest.raises(ValueError, match="not an image"):
        load_image_bytes(png_bytes(rgb)[:60], 16, 3)
    with pytest.raises(ValueError, match="in_chans"):
        load_image_bytes(png_bytes(rgb), 16, 2)


def test_load_image_bytes_size_and_resize():
    wide = np.zeros((16, 32, 3), np.uint8)
    wide[:, :8] = (255, 0, 0)
    wide[:, 8:24] = 255
    wide[:, 24:] = (0, 0, 255)
    with pytest.raises(ValueError, match="32x16 pixels but the model expects 8x8"):
        load_image_bytes(png_bytes(wide), 8, 3)
    out = load_image_bytes(png_bytes(wide), 8, 3, resize=True)
    assert out.shape == (8, 8, 3) and (out == 255).all()  # only the white middle square is kept
    up = load_image_bytes(png_bytes(np.full((4, 4), 90, np.uint8)), 12, 1, resize=True)
    assert up.shape == (12, 12, 1) and (up == 90).all()


def test_load_image_bytes_modes():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 255
    rgba[0, 0] = (200, 200, 200, 0)  # fully transparent: flattened onto black
    out = load_image_bytes(png_bytes(rgba), 4, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [10, 20, 30]
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert (load_image_bytes(png_bytes(red), 4, 1) == 76).all()  # ITU-R 601-2 luma: 0.299 * 255
    grey = np.full((4, 4), 33, np.uint8)
    assert (load_image_bytes(png_bytes(grey), 4, 3) == 33).all()
    wide = np.full((4, 4), 257 * 100, np.uint16)
    wide[0, 0] = 65535
    out16 = load_image_bytes(png_bytes(wide), 4, 1)
    assert out16[0, 0, 0] == 255 and out16[1, 1, 0] == 100
    with pytest.raises(ValueError, match="32-bit float"):
        load_image_bytes(png_bytes(np.zeros((4, 4), np.float32), "TIFF"), 4, 1)
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (40, 180)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert (load_image_bytes(buf.getvalue(), 4, 1) == 40).all()  # the first frame
    palette = Image.fromarray(red).convert("P")
    buf = io.BytesIO()
    palette.save(buf, "PNG")
    assert load_image_bytes(buf.getvalue(), 4, 3)[0, 0].tolist() == [255, 0, 0]


# ---------------------------------------------------------------- to_model_size
def test_to_model_size_grey_to_rgb_224():
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    images[2] = 77
    out = to_model_size(images, 224, 3)
    assert isinstance(out, np.ndarray) and out.shape == (3, 224, 224, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert (out[2] == 77).all()
    assert to_model_size(images, 28, 1) is images
    t = to_model_size(torch.from_numpy(images), 56, 3)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 56, 56, 3)


def test_to_model_size_matches_pil():
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
    out = to_model_size(images, 16, 3)
    for image, got in zip(images, out):
        ref = np.asarray(Image.fromarray(image[:, 4:36]).resize((16, 16), Image.Resampling.BILINEAR))
        assert np.abs(ref.astype(int) - got).max() <= 1  # center crop, then antialiased bilinear
    grey = to_model_size(images[:, :, :32], 32, 1)[..., 0]
    ref = np.stack([np.asarray(Image.fromarray(i[:, :32]).convert("L")) for i in images])
    assert np.abs(ref.astype(int) - grey).max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        to_model_size(images.astype(np.float32), 16, 3)
    with pytest.raises(ValueError, match="in_chans"):
        to_model_size(images, 16, 4)

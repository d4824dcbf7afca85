import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from mimmia_core import data
from mimmia_core.data import (ArraySource, ImageFolderSource, Subset, load_fashion_mnist, load_image_bytes, load_npz,
                              load_torchvision, open_source, source_spec)

FASHION = next((d for d in data.FASHION_MNIST_DIRS if d.exists()), data.FASHION_MNIST_DIRS[0])


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(payload)


def write_fake_mnist(root, rng, n_train=12, n_test=5, gz=False, sub=""):
    sets = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_stem, lbl_stem = data.datasets.FASHION_MNIST_FILES[split]
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
    with pytest.raises(ValueError, match=r"junk.npz: it is not an .npz \(zip\) archive"):
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
    with pytest.raises(ValueError, match="1 ids not in the source") as e:  # a ValueError too, and unquoted
        s.positions_of([100, 42])
    assert str(e.value) == "array: 1 ids not in the source, e.g. [42]"
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
    assert s.root / s.relpaths[4] == tmp_path / "b" / "1.png"
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


# ---------------------------------------------------------------- bad input: clear errors, never a traceback
def png_header(width, height):
    """A PNG whose header claims width x height; its pixel data is garbage, so decoding it would fail."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b""))


def symlink_loop(tmp_path, name):
    (tmp_path / name).symlink_to(tmp_path / name)
    return tmp_path / name


def write_bad_npz(path, kind):
    """Files that are not a readable .npz; np.load's own error, if any, is in the comment."""
    images = np.zeros((3, 4, 4), np.uint8)
    if kind == "random":  # ValueError: "pickled (object) data" (bytes that are no zip are tried as a pickle)
        path.write_bytes(np.random.default_rng(0).bytes(200))
    elif kind == "empty":  # EOFError: "No data left in file"
        path.write_bytes(b"")
    elif kind == "truncated":  # zipfile.BadZipFile: "File is not a zip file"
        np.savez(path, images=images)
        path.write_bytes(path.read_bytes()[:-30])
    elif kind == "npy":  # no error: np.load returns the one array
        with open(path, "wb") as f:
            np.save(f, images)
    elif kind == "bad-crc":  # zipfile.BadZipFile on reading the member: "Bad CRC-32"
        np.savez(path, images=np.full((3, 4, 4), 7, np.uint8))
        raw = path.read_bytes()
        at = raw.index(bytes([7] * 48)) + 47
        path.write_bytes(raw[:at] + b"\x08" + raw[at + 1:])
    elif kind == "object":  # ValueError: "Object arrays cannot be loaded when allow_pickle=False"
        np.savez(path, images=np.array([1, "a"], dtype=object))
    elif kind == "not-npy":  # no error: a member without a .npy header comes back as bytes
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("images.npy", b"garbage")
    elif kind == "folder":  # IsADirectoryError
        path.mkdir()


@pytest.mark.parametrize("kind,message", [
    ("random", r"it is not an .npz \(zip\) archive; save one with numpy.savez"),
    ("empty", r"it is empty, not an .npz \(zip\) archive"),
    ("truncated", r"starts like a zip archive but is cut short or damaged, so it is not a readable .npz \(zip\)"),
    ("npy", r"it is a .npy file \(one array\), not an .npz \(zip\) archive"),
    ("bad-crc", r"a damaged .npz archive \(Bad CRC-32"),
    ("object", r"an array in the .npz cannot be read \(Object arrays cannot be loaded"),
    ("not-npy", r"'images' in the archive is not a .npy array"),
    ("folder", r"is a folder, not an .npz file; open a folder of images as folder:"),
])
def test_bad_npz_files_are_clear_errors(tmp_path, kind, message):
    path = tmp_path / "data.npz"
    write_bad_npz(path, kind)
    for opener in (load_npz, lambda p: open_source(f"npz:{p}")):
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))}.*{message}"):
            opener(path)


@pytest.mark.parametrize("ids,message", [
    (np.array([1.5, 2.0, 3.0]), "float ids such as 1.5"),
    (np.array([2.0, 2.5, 3.0]), "float ids such as 2.5"),  # the example is a non-integer one
    (np.array([1.0, 2.0, 3.0]), "float ids such as 1.0"),  # integer-valued floats too
    (np.array([np.nan, 1.0, 2.0]), "float ids such as nan"),
    (np.array([True, False, True]), "boolean ids such as True"),
    (np.array(["a", "b", "c"]), "text ids such as 'a'"),
])
def test_npz_ids_must_be_integers(tmp_path, ids, message):
    np.savez(tmp_path / "x.npz", images=np.zeros((3, 2, 2), np.uint8), ids=ids)
    with pytest.raises(ValueError, match=re.escape(f"ids must be integers; the 'ids' array of {tmp_path / 'x.npz'} "
                                                   f"holds {message}")):
        load_npz(tmp_path / "x.npz")


def test_npz_uint64_ids(tmp_path):
    images = np.zeros((3, 2, 2), np.uint8)
    np.savez(tmp_path / "ok.npz", images=images, ids=np.array([0, 7, 2 ** 63 - 1], np.uint64))
    s = load_npz(tmp_path / "ok.npz")
    assert s.ids.dtype == np.int64 and s.ids.tolist() == [0, 7, 2 ** 63 - 1]
    np.savez(tmp_path / "big.npz", images=images, ids=np.array([0, 2 ** 63, 2 ** 64 - 1], np.uint64))
    with pytest.raises(ValueError, match=r"ids must fit in int64 \(-2\*\*63 to 2\*\*63 - 1\); the 'ids' array of "
                                         r".*big.npz holds 18446744073709551615"):
        load_npz(tmp_path / "big.npz")


@pytest.mark.parametrize("ids,message", [
    ([0, 2 ** 63, 1], "ids must fit in int64 (-2**63 to 2**63 - 1); the ids of array holds 9223372036854775808"),
    ([0, -2 ** 63 - 1, 1], "ids must fit in int64 (-2**63 to 2**63 - 1); the ids of array holds -9223372036854775809"),
    ([0, 2 ** 70, 1], "ids must fit in int64"),
    ([0, 1.5, 2], "ids must be integers; the ids of array holds float ids such as 1.5"),
    ([0, 1, 2.0], "ids must be integers; the ids of array holds float ids such as 2.0"),
    ([0, True, 2], "ids must be integers; the ids of array holds boolean ids such as True"),
    ([0, None, 2], "ids must be integers; the ids of array holds NoneType ids such as None"),
    (np.array([0, 1, 2 ** 63], np.uint64), "ids must fit in int64"),
    (np.array([0.0, 1.0, 2.0], np.float32), "float ids such as 0.0"),
])
def test_array_source_refuses_bad_ids(ids, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ArraySource(np.zeros((3, 2, 2), np.uint8), ids=ids)


def test_negative_and_extreme_ids_are_allowed():
    ids = [-2 ** 63, -5, 2 ** 63 - 1]
    s = ArraySource(np.arange(3, dtype=np.uint8).reshape(3, 1, 1), ids=ids)
    assert s.ids.tolist() == ids and s.positions_of([2 ** 63 - 1, -2 ** 63]).tolist() == [2, 0]
    assert s.subset([-5]).images([0])[0, 0, 0, 0] == 1


@pytest.mark.parametrize("ids,message", [
    ([2 ** 63], "ids must fit in int64 (-2**63 to 2**63 - 1); the ids asked of array holds 9223372036854775808"),
    ([-2 ** 63 - 1], "ids must fit in int64"),
    (np.array([2 ** 63], np.uint64), "ids must fit in int64"),
    ([1.5], "ids must be integers; the ids asked of array holds float ids such as 1.5"),
    (np.array([1.0]), "float ids such as 1.0"),
    (["1"], "text ids such as '1'"),
])
def test_positions_of_and_subset_refuse_bad_ids(ids, message):
    s = ArraySource(np.zeros((3, 2, 2), np.uint8))
    for ask in (s.positions_of, s.subset):
        with pytest.raises(ValueError, match=re.escape(message)):
            ask(ids)


def test_empty_sources():
    empty = ArraySource(np.zeros((0, 2, 2), np.uint8), name="nothing")
    with pytest.raises(KeyError, match=r"nothing holds no images; 1 ids asked, e.g. \[3\]"):
        empty.positions_of([3])
    assert empty.positions_of([]).tolist() == [] and len(empty.subset([])) == 0
    with pytest.raises(ValueError, match="nothing holds no images, so it has no image shape"):
        empty.image_shape


@pytest.mark.parametrize("opener", [
    pytest.param(lambda p: load_npz(p), id="load_npz"),
    pytest.param(lambda p: open_source(f"npz:{p}"), id="npz-spec"),
    pytest.param(lambda p: ImageFolderSource(p), id="ImageFolderSource"),
    pytest.param(lambda p: open_source(f"folder:{p}?mode=L"), id="folder-spec"),
    pytest.param(lambda p: load_fashion_mnist(root=p), id="load_fashion_mnist"),
    pytest.param(lambda p: open_source(f"fashion-mnist:test@{p}"), id="fashion-mnist-spec"),
    pytest.param(lambda p: open_source(f"cifar10:{p}"), id="cifar10-spec"),
])
def test_symlink_loops_and_missing_paths(tmp_path, opener):
    loop = symlink_loop(tmp_path, "loop")
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(loop))}: a symlink loop"):
        opener(loop)
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path / 'gone'))}: no such file or directory"):
        opener(tmp_path / "gone")


def test_folder_source_given_a_file(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"x.npz is a file, not a folder; .* or open the file as npz:"):
        open_source(f"folder:{tmp_path / 'x.npz'}")


@pytest.mark.parametrize("query,message", [
    ("resize=0x32", "resize sides must each be 1 to 4096 pixels (MAX_SIDE), got 0x32"),
    ("resize=32x4097", "resize sides must each be 1 to 4096 pixels (MAX_SIDE), got 32x4097"),
    ("resize=100000x100000", "resize sides must each be 1 to 4096 pixels (MAX_SIDE), got 100000x100000"),
    ("resize=-5x5", "resize must be HEIGHTxWIDTH in whole pixels, each 1 to 4096, e.g. resize=32x32"),
    ("resize=3.5x4", "resize must be HEIGHTxWIDTH in whole pixels, each 1 to 4096"),
    ("resize=3_2x32", "resize must be HEIGHTxWIDTH in whole pixels"),
    ("resize=32", "resize must be HEIGHTxWIDTH in whole pixels"),
    ("resize=32x32x3", "resize must be HEIGHTxWIDTH in whole pixels"),
    ("resize=", "resize must be HEIGHTxWIDTH in whole pixels"),
    ("mode=rgb", "mode must be L (grey) or RGB, got 'rgb'"),
    ("mode=CMYK", "mode must be L (grey) or RGB, got 'CMYK'"),
    ("mode=", "mode must be L (grey) or RGB, got ''"),
    ("mode=L&mode=RGB", "folder options are mode=L|RGB and resize=HxW, each at most once"),
    ("size=3", "folder options are mode=L|RGB and resize=HxW"),
])
def test_folder_spec_options_are_checked(tmp_path, query, message):
    write_folder(tmp_path, np.random.default_rng(12), n_per_class=1)
    with pytest.raises(ValueError, match=re.escape(message)):
        open_source(f"folder:{tmp_path}?{query}")


@pytest.mark.parametrize("resize,message", [
    ((0, 4), "resize sides must each be 1 to 4096 pixels (MAX_SIDE), got 0x4"),
    ((4, 4097), "got 4x4097"),
    ((3.5, 4), "resize must be (height, width), two whole numbers of pixels, got (3.5, 4)"),
    ((True, 4), "two whole numbers"),
    ((4,), "two whole numbers"),
    ("4x4", "two whole numbers"),
])
def test_folder_resize_is_bounded(tmp_path, resize, message):
    write_folder(tmp_path, np.random.default_rng(13), n_per_class=1)
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageFolderSource(tmp_path, resize=resize)
    assert ImageFolderSource(tmp_path, resize=(data.MAX_SIDE, 1)).size == (4096, 1)  # the limit itself is allowed


@pytest.mark.parametrize("width,height,pixels", [
    (5000, 5000, "5000x5000 = 25000000"),  # over our cap: refused from the header, the garbage pixels never read
    (10000, 10000, "10000x10000 = 100000000"),  # over PIL's warning limit: no DecompressionBombWarning
    (20000, 20000, "400000000"),  # over PIL's error limit: its DecompressionBombError, in our words
])
def test_images_over_the_pixel_cap_are_refused(tmp_path, width, height, pixels):
    message = f"is {pixels} pixels, over the cap of 16777216 pixels (MAX_IMAGE_PIXELS); downscale it first"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=re.escape(f"the upload {message}")):
            load_image_bytes(png_header(width, height), 28, 1, resize=True)
        (tmp_path / "big.png").write_bytes(png_header(width, height))
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'big.png'} {message}")):
            ImageFolderSource(tmp_path)


def test_pixel_cap_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(data.images, "MAX_IMAGE_PIXELS", 64)
    assert load_image_bytes(png_bytes(np.zeros((8, 8), np.uint8)), 8, 1).shape == (8, 8, 1)
    with pytest.raises(ValueError, match=r"the upload is 8x9 = 72 pixels, over the cap of 64 pixels"):
        load_image_bytes(png_bytes(np.zeros((9, 8), np.uint8)), 8, 1, resize=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "b.png")
    s = ImageFolderSource(tmp_path, resize=(8, 8))
    assert s.images([0]).shape == (1, 8, 8, 1)
    with pytest.raises(ValueError, match=r"b.png is 8x9 = 72 pixels, over the cap of 64 pixels"):
        s.images([1])


def test_palette_and_gif_folders_open_as_rgb(tmp_path):
    grey = np.full((4, 4), 90, np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.gif")  # GIFs open in mode P, even grey ones
    Image.fromarray(grey).convert("P").save(tmp_path / "b.png")
    s = ImageFolderSource(tmp_path)
    assert s.mode == "RGB" and (s.images([0, 1]) == 90).all() and s.image_shape == (4, 4, 3)
    assert ImageFolderSource(tmp_path, mode="L").image_shape == (4, 4, 1)


def fit_message(source, img_size, in_chans):
    with pytest.raises(ValueError) as e:
        data.check_images_fit(source, img_size, in_chans, "models/m")
    return str(e.value)


def test_check_images_fit_folder_hints(tmp_path):
    rgb, grey, odd = tmp_path / "rgb", tmp_path / "grey", tmp_path / "odd"
    write_folder(rgb, np.random.default_rng(14), size=(8, 8), n_per_class=1)
    grey.mkdir(), odd.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(grey / "0.png")
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(odd / "0.png")
    data.check_images_fit(ImageFolderSource(rgb), 8, 3, "models/m")  # fits: no error
    assert fit_message(ImageFolderSource(rgb), 8, 1) == (
        "rgb: images are 8x8 with 3 channel(s), but the model models/m expects 8x8 with 1 channel(s); "
        f"open the folder as folder:{rgb}?mode=L (mode=L turns colour into grey)")
    assert fit_message(ImageFolderSource(grey), 8, 3).endswith(
        f"open the folder as folder:{grey}?mode=RGB (mode=RGB repeats grey in 3 channels)")
    assert fit_message(ImageFolderSource(odd), 8, 1).endswith(
        f"open the folder as folder:{odd}?resize=8x8 (resize=8x8 center-crops and resizes each image)")
    assert fit_message(ImageFolderSource(odd, mode="RGB", resize=(5, 5)), 8, 1).endswith(
        f"folder:{odd}?mode=L&resize=8x8 (mode=L turns colour into grey; resize=8x8 center-crops and resizes "
        f"each image)")
    assert fit_message(ImageFolderSource(odd, mode="L", resize=(4, 4)), 8, 1).endswith(
        f"folder:{odd}?mode=L&resize=8x8 (resize=8x8 center-crops and resizes each image)")
    members = open_source(f"folder:{rgb}").subset([1], name="members")  # a subset speaks of its folder
    assert fit_message(members, 8, 1).startswith("members: images are 8x8 with 3 channel(s)")
    assert fit_message(members, 8, 1).endswith(f"folder:{rgb}?mode=L (mode=L turns colour into grey)")


def test_check_images_fit_gif_folder_for_a_grey_model(tmp_path):
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "a.gif")
    assert f"folder:{tmp_path}?mode=L (mode=L" in fit_message(ImageFolderSource(tmp_path), 8, 1)


def test_check_images_fit_array_hints(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    assert fit_message(load_npz(tmp_path / "x.npz").subset([0]), 8, 1).endswith(
        f"the 'images' array of {tmp_path / 'x.npz'} must be uint8 shaped (N, 8, 8) or (N, 8, 8, 1); crop, resize "
        f"and make them grey (or write them as image files and open the folder with ?mode=&resize=), and save one "
        f"with numpy.savez(PATH, images=..., ids=..., labels=...), then open it as npz:PATH")
    message = fit_message(ArraySource(np.zeros((2, 6, 6), np.uint8), name="arr"), 8, 3)
    assert message.startswith("arr: images are 6x6 with 1 channel(s), but the model models/m expects 8x8 with 3 ")
    assert "; the images must be uint8 shaped (N, 8, 8, 3); crop, resize and make them RGB" in message


def test_attacks_check_images_fit_speaks_the_same_words(tmp_path):
    from types import SimpleNamespace

    from mimmia_core.attacks import check_images_fit
    write_folder(tmp_path, np.random.default_rng(15), size=(8, 8), n_per_class=1)
    loaded = SimpleNamespace(config=SimpleNamespace(img_size=8, in_chans=1), path=tmp_path / "target")
    with pytest.raises(ValueError, match=re.escape(f"the model {tmp_path / 'target'} expects 8x8 with 1 channel(s); "
                                                   f"open the folder as folder:{tmp_path}?mode=L")):
        check_images_fit(loaded, ImageFolderSource(tmp_path))


@pytest.mark.parametrize("content,message", [
    pytest.param(b"not gzip at all", "Not a gzipped file", id="not-gzip"),
    pytest.param(gzip.compress(b"\0\0\x08\x01" + bytes(100), mtime=0)[:20],
                 "Compressed file ended before the end-of-stream marker", id="cut-short"),
])
def test_unreadable_idx_files(tmp_path, content, message):
    write_fake_mnist(tmp_path, np.random.default_rng(16), gz=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot be read as an IDX file \(.*" + message):
        load_fashion_mnist(tmp_path)


def test_open_source_needs_a_string():
    with pytest.raises(ValueError, match="a source spec is a string such as 'demo' or 'npz:PATH', got NoneType"):
        open_source(None)

"""Image datasets in their standard on-disk formats, read with numpy: CIFAR-10/100 python pickles and
Fashion-MNIST IDX files; plus the CIFAR download helper.

Where the files are looked for (data.path, or the default when it is unset):
    cifar10        <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}   (or <root> is that folder)
    cifar100       <root>/cifar-100-python/{train,test}                      (or <root> is that folder)
    fashion_mnist  <root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
The default root is data.cache_dir for CIFAR and /usr/share/datasets/fashion-mnist (Debian's
`dataset-fashion-mnist` package) for Fashion-MNIST.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ImageSpec:
    """A dataset's shape and where its files live."""

    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    folder: str  # sub-folder of the root that holds the files ("" when the files sit in the root)
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    url: str = ""  # archive for download_cifar
    md5: str = ""


IMAGE_SETS = {
    "cifar10": ImageSpec(
        (3, 32, 32), 10, "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": ImageSpec(
        (3, 32, 32), 100, "cifar-100-python", ("train",), ("test",),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    ),
    "fashion_mnist": ImageSpec(
        (1, 28, 28), 10, "", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ),
}


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)


def image_spec(name: str) -> ImageSpec:
    if name not in IMAGE_SETS:
        raise ValueError(f"data.name={name!r} is not an image set: use one of {', '.join(IMAGE_SETS)}")
    return IMAGE_SETS[name]


def image_root(cfg: Any) -> Path:
    """data.path, or the default root for the dataset."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    return FASHION_MNIST_DEFAULT if cfg.name == "fashion_mnist" else Path(cfg.cache_dir).expanduser()


def _how_to_get(name: str, root: Path) -> str:
    if name == "fashion_mnist":
        return (
            "install Debian's dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`, files land in "
            f"{FASHION_MNIST_DEFAULT}) or download the four *-ubyte.gz files from "
            "https://github.com/zalandoresearch/fashion-mnist into data.path"
        )
    return f"download them with `python -m scaling.data.prepare data={name} data.path={root} --download`"


def dataset_files(cfg: Any) -> tuple[list[Path], list[Path]]:
    """(train files, test files) of cfg's dataset; a clear error naming data.path when any is missing."""
    spec = image_spec(cfg.name)
    root = image_root(cfg)
    folders = [root / spec.folder, root] if spec.folder else [root]
    found: dict[str, Path] = {}
    missing = []
    for file in spec.train_files + spec.test_files:
        candidates = [folder / f"{file}{ext}" for folder in folders for ext in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(file)
        else:
            found[file] = hit
    if missing:
        raise FileNotFoundError(
            f"data.name={cfg.name}: {', '.join(missing)} not found under data.path={str(root)!r} "
            f"(looked in {', '.join(str(f) for f in folders)}): {_how_to_get(cfg.name, root)}"
        )
    return [found[f] for f in spec.train_files], [found[f] for f in spec.test_files]


# --- CIFAR -------------------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of numpy arrays, lists, bytes) and refuses any other global."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR file refers to {module}.{name}, which a CIFAR batch never holds")
        if module == "numpy.core.multiarray":  # numpy >= 2 moved it; old pickles still name the old module
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes) -> ImageSplit:
    """One CIFAR python batch: {b'data': uint8 (N, 3072) row-major RGB planes, label_key: N labels}."""
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    try:
        data, labels = batch[b"data"], batch[label_key]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a CIFAR python batch (no b'data' / {label_key!r})") from err
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return ImageSplit(images, np.asarray(labels, dtype=np.int64))


def _concat(parts: list[ImageSplit]) -> ImageSplit:
    return ImageSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def download_cifar(name: str, root: Path) -> Path:
    """Download and check (md5) the CIFAR python archive, and extract it into root; returns the data folder."""
    spec = image_spec(name)
    if not spec.url:
        raise ValueError(f"no download for data.name={name}: {_how_to_get(name, root)}")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(spec.url).name
    if not archive.is_file():
        partial = archive.with_suffix(".part")
        urllib.request.urlretrieve(spec.url, partial)
        partial.rename(archive)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != spec.md5:
        raise ValueError(f"{archive} has md5 {digest}, expected {spec.md5}: delete it and download again")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")
    return root / spec.folder


# --- Fashion-MNIST (IDX) -----------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): magic 0x0000, type byte 0x08 (uint8), ndim byte, ndim big-endian uint32
    dimensions, then the data in C order."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} values but its header says {dims}")
    return data.reshape(dims)


def _read_idx_pair(images: Path, labels: Path) -> ImageSplit:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{images} {x.shape} and {labels} {y.shape} are not N 2-D images with N labels")
    return ImageSplit(x[:, None].copy(), y.astype(np.int64))


# --- loading -----------------------------------------------------------------------------------------------------


def load_image_set(cfg: Any) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) of cfg's dataset, checked against its spec."""
    spec = image_spec(cfg.name)
    train_files, test_files = dataset_files(cfg)
    if cfg.name == "fashion_mnist":
        train, test = _read_idx_pair(*train_files), _read_idx_pair(*test_files)
    else:
        key = b"labels" if cfg.name == "cifar10" else b"fine_labels"
        train = _concat([read_cifar_batch(f, key) for f in train_files])
        test = _concat([read_cifar_batch(f, key) for f in test_files])
    for split in (train, test):
        if split.images.shape[1:] != spec.shape:
            raise ValueError(f"data.name={cfg.name}: images have shape {split.images.shape[1:]}, expected {spec.shape}")
        if split.labels.size and not 0 <= split.labels.min() <= split.labels.max() < spec.num_classes:
            raise ValueError(f"data.name={cfg.name}: labels outside 0..{spec.num_classes - 1}")
    return train, test

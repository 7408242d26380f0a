"""The colour photographs VAE papers train on: CIFAR-10, SVHN (cropped digits) and CelebA (64x64 faces).

Each is read from the files its authors publish, fetched from their canonical URLs (or put in
`--data-dir` by hand), every file checked against the sha256 that TensorFlow Datasets publishes
for it (`tensorflow_datasets/url_checksums/`; CIFAR-10's also in Keras' `keras.datasets.cifar10`):

    cifar10  cifar-10-python.tar.gz: the python pickles of 50,000 + 10,000 32x32 images, 10 classes
    svhn     train_32x32.mat and test_32x32.mat (MATLAB v5, read with scipy): 73,257 + 26,032 32x32
             house-number digits, labels 0-9 (the files' label 10 is the digit 0); `extra_32x32.mat`
             is not used
    celeba   img_align_celeba.zip (the aligned 178x218 JPEGs) and list_eval_partition.txt: the official
             training (162,770) and test (19,962) partitions, the validation partition not used; no
             labels. Each image is cropped to its central 148x148 pixels (rows 35-182, columns 15-162)
             and resized to 64x64 with Pillow's bilinear filter, as PyTorch-VAE's torchvision
             `CenterCrop(148)` then `Resize(64)` do.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.dataset import Arrays
from vaelab.data.sources import Builtin, NumpyOnlyUnpickler, Published
from vaelab.errors import VaelabError

CIFAR10_FILE = Published(
    "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"x_train": [f"data_batch_{k}" for k in range(1, 6)], "x_test": ["test_batch"]}

SVHN_FILES = (
    Published(
        "train_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
    ),
    Published(
        "test_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
    ),
)
SVHN_SIZES = (73_257, 26_032)  # images in the training and the test file

# Google Drive links of the CelebA page (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), as TensorFlow Datasets
# fetches them; `confirm=t` skips Drive's "cannot scan this file for viruses" page for files over 100 MB.
_DRIVE = "https://drive.google.com/uc?export=download&confirm=t&id="
CELEBA_FILES = (
    Published(
        "img_align_celeba.zip",
        _DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
        "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
    ),
    Published(
        "list_eval_partition.txt",
        _DRIVE + "0B7EVK8r0v71pY0NSMzRuSXJEVkk",
        "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
    ),
)
CELEBA_SIZES = (162_770, 19_962)  # the official training and test partitions (0 and 2)
CELEBA_ALIGNED = (218, 178)  # height, width of an aligned image
CELEBA_CROP = (15, 35, 163, 183)  # left, top, right, bottom: the central 148x148 pixels, as torchvision crops
CELEBA_SIDE = 64


def read_cifar10(paths: dict[str, Path]) -> Arrays:
    """The arrays in cifar-10-python.tar.gz: (n, 32, 32, 3) uint8 images and uint8 labels, in the files' order."""
    path = paths[CIFAR10_FILE.name]
    arrays = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            batches = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for key, names in CIFAR10_BATCHES.items():
                images, labels = [], []
                for name in names:
                    if name not in batches:
                        raise VaelabError(f"{path} lacks {name}; download it again")
                    batch = _unpickle(tar.extractfile(batches[name]).read(), f"{name} in {path}")
                    images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                    labels.append(np.asarray(batch[b"labels"], np.uint8))
                arrays[key] = np.ascontiguousarray(np.concatenate(images))
                arrays["y" + key[1:]] = np.concatenate(labels)
    except (OSError, EOFError, tarfile.TarError, KeyError, ValueError, TypeError) as err:
        raise VaelabError(f"{path} is unreadable or truncated ({err}); download it again") from None
    return arrays


def _unpickle(raw: bytes, origin: str) -> dict:
    try:
        batch = NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise VaelabError(f"{origin} is not a CIFAR batch ({err}); download it again") from None
    if not isinstance(batch, dict):
        raise VaelabError(f"{origin} is not a CIFAR batch; download it again")
    return batch


def read_svhn(paths: dict[str, Path]) -> Arrays:
    """The arrays in train_32x32.mat and test_32x32.mat: (n, 32, 32, 3) uint8 images, digits 0-9 as labels."""
    from scipy.io import loadmat

    arrays = {}
    for file, split in zip(SVHN_FILES, ("train", "test"), strict=True):
        path = paths[file.name]
        try:
            mat = loadmat(path, variable_names=["X", "y"])
            x, y = mat["X"], mat["y"]
        except (OSError, ValueError, KeyError, TypeError, NotImplementedError) as err:
            raise VaelabError(f"{path} is not SVHN's MATLAB file ({err}); download it again") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            raise VaelabError(f"{path} holds X{list(x.shape)} and y{list(y.shape)}, not SVHN's; download it again")
        arrays[f"x_{split}"] = np.ascontiguousarray(np.moveaxis(x, 3, 0).astype(np.uint8))
        arrays[f"y_{split}"] = (y.reshape(-1) % 10).astype(np.uint8)  # the files write the digit 0 as 10
    return arrays


def read_celeba(paths: dict[str, Path]) -> Arrays:
    """The official training and test partitions of CelebA, centre-cropped and resized to (n, 64, 64, 3) uint8."""
    partition_path, archive = paths["list_eval_partition.txt"], paths["img_align_celeba.zip"]
    partition = {}
    try:
        for line in partition_path.read_text().split("\n"):
            if line.strip():
                name, part = line.split()
                partition[name] = int(part)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise VaelabError(f"{partition_path} is not CelebA's partition list ({err}); download it again") from None
    names = {split: sorted(n for n, p in partition.items() if p == part) for split, part in (("train", 0), ("test", 2))}
    arrays = {}
    try:
        with zipfile.ZipFile(archive) as z:
            members = {Path(m).name: m for m in z.namelist() if m.endswith(".jpg")}
            for split, files in names.items():
                out = np.empty((len(files), CELEBA_SIDE, CELEBA_SIDE, 3), np.uint8)
                for k, name in enumerate(files):
                    if name not in members:
                        raise VaelabError(f"{archive} lacks {name}, listed in {partition_path.name}; download it again")
                    out[k] = celeba_image(z.read(members[name]), f"{name} in {archive}")
                arrays[f"x_{split}"] = out
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{archive} is unreadable or truncated ({err}); download it again") from None
    return arrays


def celeba_image(jpeg: bytes, origin: str) -> np.ndarray:
    """One aligned CelebA JPEG -> (64, 64, 3) uint8: its central 148x148 pixels, bilinear-resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            if image.size[::-1] != CELEBA_ALIGNED:
                raise VaelabError(f"{origin} is {image.size[0]}x{image.size[1]}, not an aligned 178x218 CelebA image")
            face = image.convert("RGB").crop(CELEBA_CROP)
            return np.asarray(face.resize((CELEBA_SIDE, CELEBA_SIDE), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VaelabError(f"{origin} is not a readable JPEG ({err}); download the archive again") from None


def _help(files: tuple[Published, ...], page: str) -> str:
    names = " and ".join(f.name for f in files)
    return f"download {names} from {page} into a directory and pass it with --data-dir"


COLOUR: dict[str, Builtin] = {
    "cifar10": Builtin(
        "cifar10",
        "CIFAR-10",
        CIFAR10_CLASSES,
        (5000,) * 10,
        (1000,) * 10,
        help=_help((CIFAR10_FILE,), "https://www.cs.toronto.edu/~kriz/cifar.html"),
        image_shape=(32, 32, 3),
        files=(CIFAR10_FILE,),
        read=read_cifar10,
    ),
    "svhn": Builtin(
        "svhn",
        "SVHN",
        tuple(str(d) for d in range(10)),
        SVHN_SIZES[0],  # the per-digit counts are not published with the files: only the totals are checked
        SVHN_SIZES[1],
        help=_help(SVHN_FILES, "http://ufldl.stanford.edu/housenumbers/"),
        image_shape=(32, 32, 3),
        files=SVHN_FILES,
        read=read_svhn,
    ),
    "celeba": Builtin(
        "celeba",
        "CelebA",
        None,
        CELEBA_SIZES[0],
        CELEBA_SIZES[1],
        help=_help(CELEBA_FILES, "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
        image_shape=(CELEBA_SIDE, CELEBA_SIDE, 3),
        files=CELEBA_FILES,
        read=read_celeba,
    ),
}

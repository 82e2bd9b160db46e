"""Fetching the official dataset archives: download, verify, extract.

Every dataset is described by a tuple of :class:`Resource` entries in
:data:`RESOURCES`, keyed by dataset name. The table is a plain dict so tests
(and mirrors) can point an entry at another URL with another checksum.

Guarantees of :func:`fetch`:

* nothing is downloaded when the extracted files are already in place, nor
  when the archive is on disk and its checksum verifies;
* a download is streamed to a temporary file beside the target and only
  renamed into place once its checksum matches (a failed or interrupted
  download never leaves a file under the final name);
* an archive is extracted into a temporary folder inside ``root`` and each
  expected member is then renamed to its final place, so a half-extracted
  tree is never visible under the final name;
* archive members with absolute paths, ``..`` components or links are
  refused (a tarball must not write outside ``root``).

Checksums: the CIFAR MD5s are the ones published on the CIFAR page
(https://www.cs.toronto.edu/~kriz/cifar.html). The GTSRB and Tiny-ImageNet
MD5s are not published by their hosts; the values below are the ones recorded
independently by several public projects for these exact archives. An entry
whose ``md5`` is ``None`` is verified by trust on first use: the SHA-256 and
size of the first download are recorded in ``<archive>.sha256.json`` and
every later use must match them.
"""
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Optional, Tuple


class ChecksumError(ValueError):
    """A downloaded or cached archive does not match its expected checksum."""


@dataclass(frozen=True)
class Resource:
    """One downloadable archive of a dataset.

    ``members`` maps a path inside the extracted archive to its destination
    relative to ``root``; the resource counts as installed once every
    destination exists.
    """
    url: str
    filename: str
    md5: Optional[str]
    members: Tuple[Tuple[str, str], ...]


_KRIZ = "https://www.cs.toronto.edu/~kriz/"
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"

RESOURCES = {
    "cifar10": (Resource(_KRIZ + "cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                         "c32a1d4ab5d03f1284b67883e8d87530",
                         (("cifar-10-batches-bin", "cifar-10-batches-bin"),)),),
    "cifar10-python": (Resource(_KRIZ + "cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                                "c58f30108f718f92721af3b95e74349a",
                                (("cifar-10-batches-py", "cifar-10-batches-py"),)),),
    "cifar100": (Resource(_KRIZ + "cifar-100-binary.tar.gz", "cifar-100-binary.tar.gz",
                          "03b5dce01913d631647c71ecec9e9cb8",
                          (("cifar-100-binary", "cifar-100-binary"),)),),
    "cifar100-python": (Resource(_KRIZ + "cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                                 "eb9058c3a382ffc7106e4002c42a8d85",
                                 (("cifar-100-python", "cifar-100-python"),)),),
    "gtsrb": (
        Resource(_GTSRB + "GTSRB_Final_Training_Images.zip", "GTSRB_Final_Training_Images.zip",
                 "f33fd80ac59bff73c82d25ab499e03a3",
                 (("GTSRB/Final_Training", "GTSRB/Final_Training"),)),
        Resource(_GTSRB + "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_Images.zip",
                 "c7e4e6327067d32654124b0fe9e82185",
                 (("GTSRB/Final_Test/Images", "GTSRB/Final_Test/Images"),)),
        # The test archive's own CSV has no ClassId column; this one has.
        Resource(_GTSRB + "GTSRB_Final_Test_GT.zip", "GTSRB_Final_Test_GT.zip",
                 "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
                 (("GT-final_test.csv", "GTSRB/Final_Test/GT-final_test.csv"),)),
    ),
    "tiny-imagenet": (Resource("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                               "90528d7ca1a48142e341f4ef8d21d0de",
                               (("tiny-imagenet-200", "tiny-imagenet-200"),)),),
}


def fetch(name, root, resources=None, progress=True):
    """Makes every member of dataset ``name`` present under ``root``.

    ``resources`` overrides ``RESOURCES[name]``. Returns ``root``.
    """
    if resources is None:
        if name not in RESOURCES:
            raise KeyError(f"no download known for dataset {name!r}; known: {sorted(RESOURCES)}")
        resources = RESOURCES[name]
    os.makedirs(root, exist_ok=True)
    for resource in resources:
        if is_installed(resource, root):
            continue
        archive = os.path.join(root, resource.filename)
        if not (os.path.exists(archive) and archive_verifies(archive, resource.md5)):
            download_file(resource.url, archive, resource.md5, progress=progress)
        extract_members(archive, root, resource.members)
    return root


def is_installed(resource, root):
    return all(os.path.exists(os.path.join(root, dest)) for _, dest in resource.members)


def file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(archive):
    return archive + ".sha256.json"


def archive_verifies(archive, md5):
    """True when ``archive`` matches ``md5`` (or its first-use record when md5 is None)."""
    if md5 is not None:
        return file_digest(archive, "md5") == md5.lower()
    try:
        with open(_record_path(archive)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return (os.path.getsize(archive) == record.get("size")
            and file_digest(archive, "sha256") == record.get("sha256"))


def _write_atomic(path, data):
    handle, temp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def download_file(url, destination, md5=None, progress=True, timeout=60.0):
    """Streams ``url`` to ``destination`` and checks its MD5.

    With ``md5=None`` the SHA-256 and size are recorded beside the file for
    later verification. Raises :class:`ChecksumError` on a mismatch (the
    partial file is removed) and ``OSError``/``urllib.error.URLError`` when
    the server cannot be reached.
    """
    directory = os.path.dirname(os.path.abspath(destination))
    os.makedirs(directory, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".download-")
    md5_digest, sha_digest = hashlib.md5(), hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, last_report = 0, 0.0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                md5_digest.update(chunk)
                sha_digest.update(chunk)
                done += len(chunk)
                if progress and time.monotonic() - last_report > 0.5:
                    last_report = time.monotonic()
                    _report(url, done, total)
        if progress:
            _report(url, done, total, end="\n")
        if total and done != total:
            raise OSError(f"download of {url} stopped after {done} of {total} bytes")
        if md5 is not None and md5_digest.hexdigest() != md5.lower():
            raise ChecksumError(f"checksum mismatch for {url}: expected MD5 {md5.lower()}, "
                                f"got {md5_digest.hexdigest()} ({done} bytes); the file was discarded")
        os.replace(temp, destination)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    if md5 is None:
        record = {"url": url, "size": done, "sha256": sha_digest.hexdigest()}
        _write_atomic(_record_path(destination), json.dumps(record, indent=1).encode())
    return destination


def _report(url, done, total, end=""):
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    print(f"\rdownloading {url}: {size}", end=end, file=sys.stderr, flush=True)


def _safe_name(name, archive):
    normalized = os.path.normpath(name)
    if os.path.isabs(name) or normalized == ".." or normalized.startswith(".." + os.sep):
        raise ValueError(f"{archive}: refusing member {name!r}, which points outside the extraction folder")
    return normalized


def _extract_all(archive, destination):
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                _safe_name(name, archive)
            z.extractall(destination)
        return
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as error:
        raise ValueError(f"{archive} is neither a zip nor a tar archive ({error})") from None
    with tar:
        members = tar.getmembers()
        for member in members:
            _safe_name(member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: refusing member {member.name!r}: only files and folders are allowed")
        tar.extractall(destination, members=members, filter="data")


def extract_members(archive, root, members):
    """Extracts ``archive`` into a temporary folder in ``root`` and renames
    each ``(inside, destination)`` pair of ``members`` into place."""
    staging = tempfile.mkdtemp(prefix=".extract-", dir=root)
    try:
        _extract_all(archive, staging)
        for inside, destination in members:
            source = os.path.join(staging, inside)
            if not os.path.exists(source):
                raise ValueError(f"{archive} does not contain the expected {inside!r}")
        for inside, destination in members:
            target = os.path.join(root, destination)
            if os.path.exists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(os.path.join(staging, inside), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""The Caffe Model Zoo weights the studies start from: where to get them, how to check them.

Our machines cannot reach the download addresses; `download_weights` is for users who can.
Everything else (`weights_path`, `verify_weights`) works on files a user put in place by hand.
"""

from __future__ import annotations

import hashlib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medtl import caffe_env, io
from medtl.errors import MedtlError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZooModel:
    """One pretrained Caffe model and the facts needed to fetch, check and use it."""

    name: str
    url: str                        # the caffemodel's download address
    sha1: str | None                # None where no value was ever published
    # Definition matching the weights: a path inside Caffe's tree, or None when Caffe does
    # not ship one (then `definition_url` says where it is).
    definition: str | None
    definition_url: str | None
    # The source's classifier layers: renamed in our nets, so transplant must drop them.
    classifiers: tuple[str, ...]
    source: str                     # where url, sha1 and definition come from
    notes: tuple[str, ...] = field(default=())

    @property
    def filename(self) -> str:
        return f"{self.name}.caffemodel"

    def definition_path(self) -> Path:
        """The definition inside the Caffe build in use; an error where Caffe has none."""
        if self.definition is None:
            raise ZooError(f"Caffe ships no definition for {self.name}; get it from "
                           f"{self.definition_url}")
        path = caffe_env.prefix() / self.definition
        if not path.is_file():
            raise ZooError(f"{path} is missing from the Caffe build; {self.name}'s definition "
                           "is expected there")
        return path

    def how_to_get(self, dest: Path | None = None) -> str:
        """A sentence telling a user where to get the file by hand and how to check it."""
        where = f" and save it as {dest}" if dest else f" (file name {self.filename})"
        check = (f"its sha1 must be {self.sha1}" if self.sha1
                 else "no sha1 was ever published for it, so it cannot be verified")
        return f"download {self.url}{where}; {check}"


class ZooError(MedtlError, RuntimeError):
    """A model-zoo name, file or download problem, explained for the user."""


class UnknownZooModelError(ZooError, KeyError):
    def __str__(self) -> str:
        return f"unknown model-zoo model {self.args[0]!r}; known: {', '.join(MODELS)}"


class WeightsChecksumError(ZooError):
    """A weights file whose sha1 is not the published one."""


class WeightsNotFoundError(ZooError, FileNotFoundError):
    """No downloaded weights file where medtl looked."""


class DownloadError(ZooError):
    """The weights could not be fetched (no network, bad address, interrupted)."""


_BVLC = "Caffe models/{name}/readme.md (caffemodel_url, sha1; same sha1 in PROTOCOLS.md)"
_BVLC_DEPLOY = "models/{name}/deploy.prototxt"

MODELS: dict[str, ZooModel] = {
    m.name: m for m in (
        ZooModel(
            name="bvlc_alexnet",
            url="http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
            sha1="9116a64c0fbe4459d18f4bb6b56d647b63920377",
            definition=_BVLC_DEPLOY.format(name="bvlc_alexnet"),
            definition_url=None,
            classifiers=("fc8",),
            source=_BVLC.format(name="bvlc_alexnet"),
        ),
        ZooModel(
            name="bvlc_reference_caffenet",
            url="http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
            sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
            definition=_BVLC_DEPLOY.format(name="bvlc_reference_caffenet"),
            definition_url=None,
            classifiers=("fc8",),
            source=_BVLC.format(name="bvlc_reference_caffenet"),
        ),
        ZooModel(
            name="bvlc_googlenet",
            url="http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
            sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204",
            definition=_BVLC_DEPLOY.format(name="bvlc_googlenet"),
            definition_url=None,
            classifiers=("loss1/classifier", "loss2/classifier", "loss3/classifier"),
            source=_BVLC.format(name="bvlc_googlenet"),
            notes=("deploy.prototxt has no auxiliary heads (loss1/*, loss2/*); the caffemodel "
                   "holds their weights, and models/bvlc_googlenet/train_val.prototxt defines "
                   "them",),
        ),
        ZooModel(
            name="VGG_ILSVRC_16_layers",
            url="http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                "VGG_ILSVRC_16_layers.caffemodel",
            sha1=None,
            definition=None,
            definition_url="https://gist.github.com/ksimonyan/211839e770f7b538e2d8 "
                           "(VGG_ILSVRC_16_layers_deploy.prototxt)",
            classifiers=("fc8",),
            source="the model's Model Zoo gist ksimonyan/211839e770f7b538e2d8 (caffemodel_url), "
                   "linked from Caffe's Model Zoo wiki; Caffe's tree has no readme for it",
            notes=("no sha1 published (PROTOCOLS.md 'Pretrained Caffe models'): a download "
                   "cannot be verified",
                   "its deploy prototxt uses Caffe's old V1 'layers' format; Caffe upgrades it "
                   "when loading"),
        ),
    )
}


def get(name: str | ZooModel) -> ZooModel:
    """The table entry for `name` (a ZooModel passes through: mirrors, tests, new models)."""
    if isinstance(name, ZooModel):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownZooModelError(name) from None


def readme_facts(name: str) -> dict[str, str]:
    """The `key: value` front matter of Caffe's models/<name>/readme.md (url, sha1, ...)."""
    path = caffe_env.prefix() / "models" / name / "readme.md"
    if not path.is_file():
        raise ZooError(f"{path} does not exist: Caffe ships no readme for {name!r}")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != "---":
        raise ZooError(f"{path}:1: expected the '---' front matter of a Model Zoo readme")
    facts: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() == "---":
            return facts
        key, sep, value = line.partition(":")
        if not sep:
            raise ZooError(f"{path}:{number}: expected 'key: value', got {line!r}")
        facts[key.strip()] = value.strip()
    raise ZooError(f"{path}: the front matter has no closing '---'")


def sha1_of(path: Path) -> str:
    """Hex sha1 of a file, read in chunks (caffemodels are hundreds of MB)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(name: str | ZooModel, path: Path) -> str:
    """Check `path` against the published sha1 of model `name`; returns the file's sha1.

    Raises WeightsChecksumError (file, expected and actual sha1) on a mismatch. A model with
    no published sha1 (VGG-16) passes unverified: the returned sha1 is for the user's records.
    """
    model = get(name)
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; {model.how_to_get(path)}")
    actual = sha1_of(path)
    if model.sha1 is not None and actual != model.sha1:
        raise WeightsChecksumError(
            f"{path} is not the published {model.name} weights: expected sha1 {model.sha1}, "
            f"actual sha1 {actual} (a truncated or different file); {model.how_to_get(path)}")
    return actual


def weights_path(name: str | ZooModel, search_dirs: Iterable[Path], *, verify: bool = True) -> Path:
    """The already-downloaded `<name>.caffemodel` in the first of `search_dirs` holding it."""
    model = get(name)
    dirs = [Path(d) for d in search_dirs]
    for d in dirs:
        candidate = d / model.filename
        if candidate.is_file():
            if verify:
                verify_weights(name, candidate)
            return candidate
    looked = ", ".join(str(d) for d in dirs) or "no directory (none given)"
    raise WeightsNotFoundError(
        f"{model.filename} not found in {looked}; {model.how_to_get()}, into one of those "
        "directories (or run medtl.zoo.download_weights where the network is reachable)")


def download_weights(name: str | ZooModel, dest_dir: Path, *, progress: bool = True,
                     url: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch model `name` into `dest_dir`, verify its sha1, and return its path.

    The file is streamed into a temporary file beside the destination and renamed into place
    only once complete and verified; a failure leaves nothing behind. An existing verified
    file is returned as is. `url` overrides the published address (mirrors, tests).
    """
    model = get(name)
    dest_dir = Path(dest_dir)
    dest = dest_dir / model.filename
    if dest.exists():
        verify_weights(name, dest)
        return dest
    source = url or model.url
    try:
        with io.atomic_path(dest) as tmp:
            actual = _stream(source, tmp, label=model.filename, progress=progress,
                             timeout=timeout)
            if model.sha1 is not None and actual != model.sha1:
                raise WeightsChecksumError(
                    f"the file downloaded from {source} is not the published {model.name} "
                    f"weights: expected sha1 {model.sha1}, actual sha1 {actual}; nothing was "
                    f"written to {dest}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(
            f"cannot download {model.name} from {source} ({exc}); {model.how_to_get(dest)}"
        ) from exc
    return dest


def _stream(url: str, tmp: Path, *, label: str, progress: bool, timeout: float) -> str:
    """Copy `url` into `tmp`; returns the sha1 of what was written."""
    digest = hashlib.sha1()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, last_shown = 0, 0.0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress and time.monotonic() - last_shown > 0.5:
                _show(label, done, total)
                last_shown = time.monotonic()
        if total and done != total:
            raise OSError(f"connection closed after {done} of {total} bytes")
    if progress:
        _show(label, done, total)
        print(file=sys.stderr)
    return digest.hexdigest()


def _show(label: str, done: int, total: int) -> None:
    mb = 1 << 20
    of = f" / {total / mb:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
    print(f"\r{label}: {done / mb:.1f}{of}", end="", file=sys.stderr, flush=True)

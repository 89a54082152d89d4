"""Bring a base model in: a GGUF file, a Hugging Face directory or a hub id, saved once as a
plain Hugging Face directory (safetensors + config + tokenizer + chat template)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf.checkpoints import atomic_directory


class ModelImportError(Exception):
    """The source could not be read or converted; the message says what and why."""


@dataclass
class ImportedModel:
    path: str  # the saved HF directory
    source: str  # what was imported (file path, directory or hub id)
    sha256: str  # checksum of the GGUF file, or of model weights for a directory
    architecture: str
    parameters: int
    dtype: str
    eos_token: str | None
    pad_token: str | None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_hf_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def import_model(source: str, out_dir: Path, *, expected_sha256: str | None = None) -> ImportedModel:
    """Convert `source` into a Hugging Face directory at `out_dir`, which must not exist yet (it is
    built beside it, fsync'd and renamed into place: see rlhf.checkpoints.atomic_directory).

    `source` is a .gguf file, a directory holding a HF model (or one .gguf file), or a hub id.
    """
    import torch  # noqa: F401  (fail here, with a clear message, if torch is missing)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ModelImportError(f"{out_dir.name} already exists; an imported model gets a directory of its own")
    src_path = Path(source).expanduser()
    load_kwargs: dict = {}
    checksum = ""
    if src_path.is_file():
        if src_path.suffix != ".gguf":
            raise ModelImportError(f"{src_path} is a file but not a .gguf file; give a GGUF file, "
                                   "a Hugging Face model directory or a hub id")
        load_from, load_kwargs, checksum = _gguf_load_args(src_path, expected_sha256)
    elif src_path.is_dir():
        ggufs = sorted(src_path.glob("*.gguf"))
        if (src_path / "config.json").is_file():
            load_from = str(src_path)
            weights = sorted(src_path.glob("*.safetensors")) or sorted(src_path.glob("*.bin"))
            if not weights:
                raise ModelImportError(f"{src_path} has a config.json but no weights (*.safetensors or *.bin)")
            checksum = sha256_of(weights[0])
        elif len(ggufs) == 1:
            load_from, load_kwargs, checksum = _gguf_load_args(ggufs[0], expected_sha256)
        else:
            raise ModelImportError(f"{src_path} holds neither a Hugging Face model (config.json) "
                                   "nor exactly one .gguf file")
    elif source.count("/") == 1 and not source.startswith((".", "/")):
        load_from = source  # a hub id; needs network access to the hub
    else:
        raise ModelImportError(f"{source} does not exist (expected a .gguf file, a model directory or "
                               "a hub id like org/name)")

    try:
        # The tokenizer takes only the file name: a quantization config would be saved into
        # tokenizer_config.json (and fails to serialise).
        tok_kwargs = {k: v for k, v in load_kwargs.items() if k == "gguf_file"}
        tokenizer = AutoTokenizer.from_pretrained(load_from, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(load_from, **load_kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"could not load {source}: {first}") from exc
    # A GGUF load may leave the model flagged as quantized, which blocks saving and training.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False
    model.hf_quantizer = None

    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = ImportedModel(
            path=str(out_dir),
            source=str(source),
            sha256=checksum,
            architecture=(model.config.architectures or [type(model).__name__])[0],
            parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(model.dtype).removeprefix("torch."),
            eos_token=tokenizer.eos_token,
            pad_token=tokenizer.pad_token,
        )
        (tmp / "import.json").write_text(json.dumps(asdict(info), indent=2))
    return info


def _gguf_load_args(path: Path, expected_sha256: str | None) -> tuple[str, dict, str]:
    from transformers import GgufConfig

    checksum = sha256_of(path)
    if expected_sha256 and checksum != expected_sha256:
        raise ModelImportError(f"{path} is corrupt or not the expected file: sha256 {checksum}, "
                               f"expected {expected_sha256}; delete it and fetch it again")
    # dequantize=True gives plain float weights that can be saved and trained.
    return str(path.parent), {"gguf_file": path.name,
                              "quantization_config": GgufConfig(dequantize=True)}, checksum

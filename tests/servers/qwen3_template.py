"""Qwen3's official chat template, taken from a pinned PyPI wheel and checked by its sha256 (stdlib only).

The template that ``render_chatml`` must reproduce is the one in the Qwen/Qwen3-0.6B repository. Model
hubs cannot be reached from the test machines, but PyPI can, and ``trl==1.16.0`` ships a byte-identical
copy as ``trl/chat_templates/qwen3.jinja``. The wheel is downloaded once (``pip download --no-deps``,
0.9 MB) into ``.cache/trl/`` and the template is read from it; its text never enters the repository.

Used by ``tests/unit/test_qwen_render_official.py`` (import) and by ``vllm_cpu.sh model`` (CLI), which
serves the tiny model with this template::

    python tests/servers/qwen3_template.py --out .cache/trl/qwen3.jinja
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TRL_VERSION = "1.16.0"
WHEEL_NAME = f"trl-{TRL_VERSION}-py3-none-any.whl"
MEMBER = "trl/chat_templates/qwen3.jinja"
#: sha256 of Qwen3-0.6B's chat template as shipped in trl 1.16.0 (4,168 bytes).
SHA256 = "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / ".cache" / "trl"


class TemplateUnavailable(RuntimeError):
    """The wheel is not cached and could not be downloaded (no registry, no pip)."""


def _download(cache: Path, python: str, timeout_s: float) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    # Download into a private folder and move the finished wheel into place, so a concurrent reader
    # never sees half a file.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
        cmd = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "-q", f"trl=={TRL_VERSION}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TemplateUnavailable(f"`{' '.join(cmd)}` did not run: {e}") from e
        got = Path(tmp) / WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise TemplateUnavailable(f"pip download trl=={TRL_VERSION} failed (rc {proc.returncode}): "
                                      + " | ".join(tail))
        dest = cache / WHEEL_NAME
        os.replace(got, dest)
    return dest


def wheel_path(cache: Path = DEFAULT_CACHE, *, python: str = sys.executable, timeout_s: float = 300) -> Path:
    """The cached trl wheel, downloaded first if it is not there."""
    cached = cache / WHEEL_NAME
    return cached if cached.is_file() else _download(cache, python, timeout_s)


def read_template(wheel: Path) -> str:
    """The template text from ``wheel``; a sha256 that differs from :data:`SHA256` is an error, never a skip."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{wheel.name}:{MEMBER} has sha256 {digest}, expected {SHA256}: "
                         f"not the Qwen3 template this project checks against (delete {wheel} to download again)")
    return data.decode("utf-8")


def official_template(cache: Path = DEFAULT_CACHE, *, python: str = sys.executable) -> str:
    """Qwen3's official chat template text (downloads the wheel once; raises TemplateUnavailable)."""
    return read_template(wheel_path(cache, python=python))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write Qwen3's official chat template (from trl's wheel) to a file.")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheel is cached")
    ap.add_argument("--out", type=Path, required=True, help="file to write the template to")
    args = ap.parse_args(argv)
    try:
        text = official_template(args.cache)
    except TemplateUnavailable as e:
        print(f"[qwen3_template] ERROR: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=args.out.parent, delete=False) as f:
        f.write(text.encode("utf-8"))  # bytes as in the wheel: no newline translation
    os.replace(f.name, args.out)
    print(f"[qwen3_template] {args.out} (sha256 {SHA256[:8]}..., from {WHEEL_NAME})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Copy the modeling code into an exported directory so it loads with `trust_remote_code=True` WITHOUT the
`mythos` package installed (a Hub user has only transformers and torch).

Choice: bundle, not import. The export then carries the exact model code its weights were trained with, so a later
change to mythos/model cannot silently change what an old export computes. Every `mythos/model/*.py` and
`mythos/errors.py` is copied flat as `mythos_model_<name>.py` / `mythos_errors.py`, and `from mythos.model.X import`
lines become `from .mythos_model_X import` (transformers copies relative imports along with the modeling file).
A `mythos` import that cannot be rewritten fails the export, rather than producing a directory that only loads here.
Custom ops (`torch.library.custom_op("mythos::...")`) move to a namespace named after a hash of the bundled sources:
torch replaces an op registered twice under one name process-wide, so loading an export next to the installed package
(or an export of other code) must not swap the kernels either of them runs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import mythos

PKG = Path(mythos.__file__).resolve().parent
_MODEL_IMPORT = re.compile(r"^(\s*)from mythos\.model\.(\w+) import", re.M)
_ERRORS_IMPORT = re.compile(r"^(\s*)from mythos\.errors import", re.M)
_ANY_MYTHOS = re.compile(r"^\s*(from|import)\s+mythos\b.*$", re.M)
_OP_NAMESPACE = re.compile(r"""(["'])mythos::""")
MODELING_FILE = "modeling_mythos.py"
CONFIG_FILE = "configuration_mythos.py"


def rewrite_imports(source: str, where: str) -> str:
    out = _MODEL_IMPORT.sub(r"\1from .mythos_model_\2 import", source)
    out = _ERRORS_IMPORT.sub(r"\1from .mythos_errors import", out)
    left = _ANY_MYTHOS.search(out)
    if left:
        raise RuntimeError(f"{where}: import {left.group(0).strip()!r} cannot be bundled (only mythos.model.* and "
                           "mythos.errors are)")
    return out


def bundled_sources() -> dict[str, str]:
    """{file name in the export: source text} for the modeling code and everything it imports."""
    files = {CONFIG_FILE: PKG / "hf" / CONFIG_FILE, MODELING_FILE: PKG / "hf" / MODELING_FILE,
             "mythos_errors.py": PKG / "errors.py"}
    for p in sorted((PKG / "model").glob("*.py")):
        if p.name != "__init__.py":
            files[f"mythos_model_{p.stem}.py"] = p
    sources = {name: rewrite_imports(p.read_text(), str(p)) for name, p in files.items()}
    digest = hashlib.sha256("".join(sources[n] for n in sorted(sources)).encode()).hexdigest()[:12]
    return {name: _OP_NAMESPACE.sub(rf"\1mythos_{digest}::", text) for name, text in sources.items()}


def write_bundle(out: Path) -> list[str]:
    names = []
    for name, text in bundled_sources().items():
        (out / name).write_text(text)
        names.append(name)
    return names

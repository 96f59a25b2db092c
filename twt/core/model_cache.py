"""Model references that name object storage: ``s3://bucket/prefix`` (and ``file://``) students, bases,
teachers and reference models, fetched through ``twt.core.store`` into the model cache before loading.

    path = local_model("s3://twt-models/qwen2.5-0.5b")   # a local directory transformers/vLLM can load

A published directory (one with ``MANIFEST.json``, e.g. a student from the registry) is fetched with
``store.get_dir`` and every file verified against the manifest; a plain prefix (``aws s3 cp --recursive``)
is fetched file by file. The copy lives in ``$HF_HOME/twt-models/<bucket>/<prefix>`` (the pipeline mounts
the model cache volume at ``HF_HOME``), so a second load, or another step on the same volume, reuses it;
it is complete once ``.twt-fetched`` is written. Local paths and hub ids pass through unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twt.core import store
from twt.core.load import is_uri

DONE = ".twt-fetched"


def cache_root() -> Path:
    """``$HF_HOME/twt-models`` (``~/.cache/huggingface`` when HF_HOME is unset)."""
    home = os.environ.get("HF_HOME") or str(Path("~/.cache/huggingface").expanduser())
    return Path(home) / "twt-models"


def local_model(reference: str) -> str:
    """A local directory for ``reference``: fetched once for ``s3://``/``file://`` URIs, else unchanged."""
    if not is_uri(reference) or reference.startswith(("http://", "https://")):
        return reference
    location = store.parse_uri(reference.rstrip("/"))
    if location.scheme == "file":
        return location.key
    target = cache_root() / location.bucket / location.key
    if (target / DONE).is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fetched = scratch / "model"
        if store.exists(location.uri):  # a published directory: verified against its manifest
            store.get_dir(location.uri, fetched)
        else:
            files = store.list_uris(location.uri + "/")
            if not files:
                raise store.NotFoundError(f"{reference}: no model there (no objects under the prefix)")
            for uri in files:
                store.get_file(uri, fetched / uri[len(location.uri) + 1 :])
        (fetched / DONE).write_text(reference + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(fetched, target)  # another process may have won: either copy is complete
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(target)

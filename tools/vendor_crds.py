"""Vendor the OpenAPI schemas of Kubeflow Trainer's and the Training Operator's CRDs into twt/data/crds/.

    python tools/vendor_crds.py SOURCE_LABEL CRD.yaml [CRD.yaml ...]

Each CRD's ``openAPIV3Schema`` (every served version) is written as compact JSON with ``description``
fields dropped (they are 80% of the bytes and no validator reads them), under a header that records where
the CRD came from (``SOURCE_LABEL``: repository, tag or commit, path). ``twt.core.kube_schemas`` loads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "twt" / "data" / "crds"


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def vendor(source: str, path: Path) -> Path:
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]
    versions = {v["name"]: _strip(v["schema"]["openAPIV3Schema"]) for v in spec["versions"]}
    record = {
        "source": source,
        "controller_gen": crd["metadata"].get("annotations", {}).get("controller-gen.kubebuilder.io/version"),
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "plural": spec["names"]["plural"],
        "scope": spec["scope"],
        "versions": versions,
    }
    target = OUT / f"{spec['group']}_{spec['names']['plural']}.json"
    target.write_text(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
    return target


if __name__ == "__main__":
    label, *paths = sys.argv[1:]
    for p in paths:
        print(vendor(label, Path(p)))

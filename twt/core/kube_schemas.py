"""The OpenAPI schemas of the Kubeflow training CRDs, vendored in twt/data/crds/ (source and commit inside).

    schema_errors(trainjob_dict)          # [] when the object matches its CRD's schema, else messages
    crd_record("TrainJob")["source"]      # where the vendored schema came from

The schemas are the CRDs' ``openAPIV3Schema`` (descriptions dropped; ``tools/vendor_crds.py`` writes them):
TrainJob, TrainingRuntime and ClusterTrainingRuntime from kubeflow/trainer, PyTorchJob from
kubeflow/training-operator v1.9.0. Validation is what the API server does for a CRD, less the CEL rules
(``x-kubernetes-validations``): types, required fields, enums, formats, and no unknown fields where the
schema lists properties without ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources

FILES = {
    "TrainJob": "trainer.kubeflow.org_trainjobs.json",
    "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.json",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.json",
    "PyTorchJob": "kubeflow.org_pytorchjobs.json",
    # kserve/kserve v0.20.0 (twt.registry.serving)
    "InferenceService": "serving.kserve.io_inferenceservices.json",
}


@functools.cache
def crd_record(kind: str) -> dict:
    """The vendored record of ``kind``: source, group, plural, scope and the schema of each version."""
    if kind not in FILES:
        raise KeyError(f"no vendored CRD schema for kind {kind!r}; have {sorted(FILES)}")
    text = resources.files("twt").joinpath("data", "crds", FILES[kind]).read_text(encoding="utf-8")
    return json.loads(text)


def _strict(schema):
    """A copy in which objects with listed properties refuse others (as the API server prunes/rejects)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@functools.cache
def _validator(kind: str, version: str):
    import jsonschema

    record = crd_record(kind)
    if version not in record["versions"]:
        raise KeyError(
            f"{kind} has no version {version!r} in the vendored CRD; have {sorted(record['versions'])}"
        )
    schema = _strict(copy.deepcopy(record["versions"][version]))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's, not the CRD's
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def schema_errors(obj: dict) -> list[str]:
    """Problems of ``obj`` against its CRD's schema, each as ``path: message``; [] when it matches."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    group, _, version = api_version.rpartition("/")
    record = crd_record(kind)
    if group != record["group"]:
        return [f"apiVersion: {api_version!r} is not in group {record['group']}"]
    errors = sorted(_validator(kind, version).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]

"""The ``twt-distillation`` Kubeflow pipeline: the DAG, its versioned compile and upload, and local runs.

    python -m pipelines compile                 # dist/twt-distillation-<version>.yaml, deterministic
    python -m pipelines check FILE              # image tags = package version
    python -m pipelines upload --host URL       # create the pipeline, or add version <version>-<git sha>
    python -m pipelines run --host URL --config C.yaml [--set NAME=VALUE ...]   # runs that version
    python -m pipelines local --config configs/demo.yaml
    python -m pipelines publish --root s3://bucket/prefix --tag latest   # immutable version in the registry

Modules: ``distillation`` (the pipeline function and its placement, secrets, retries and caching),
``release`` (compile, check, upload, run submission), ``kfp_server`` (token, cookies, minimum backend),
``local`` (``kfp.local`` runs), ``publish`` (compiled templates to the registry of
``twt.registry.pipelines``). Built for the Kubeflow Pipelines 2.17 backend (``kfp==2.17.0``,
``kfp-kubernetes==2.17.0``); the API server must be 2.16 or newer (``kfp_server.MIN_BACKEND``).
"""

"""Component: the promoted student served by a KServe InferenceService on vLLM
(``twt.steps.steps.serve_student``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def serve_student(
    promoted: Input[Artifact],
    runtime: str,
    service_account: str,
    accelerator_type: str,
    node_selector: dict,
    tolerations: list,
    served: Output[Artifact],
) -> NamedTuple("Outputs", [("url", str)]):
    """Create or update the InferenceService of the promoted student in the run's namespace and wait until
    it is ready.

    Args:
        promoted: Promotion's record (model, version, the registry URI KServe downloads).
        runtime: The KServe serving runtime: twt-vllm or kserve-huggingfaceserver (its vLLM backend).
        service_account: The InferenceService's service account, whose Secrets give KServe the S3 keys.
        accelerator_type: The GPU resource the predictor asks one of.
        node_selector: The predictor's node selector.
        tolerations: The predictor's tolerations.
        served: The record (JSON): name, namespace, ref, storage URI, runtime, URL.

    Returns:
        url: The InferenceService's URL.
    """
    from twt.steps import steps

    record = steps.serve_student(
        promoted.path,
        served.path,
        runtime=runtime,
        service_account=service_account,
        gpu_resource=accelerator_type,
        node_selector=node_selector,
        tolerations=tolerations,
    )
    return (record["url"],)

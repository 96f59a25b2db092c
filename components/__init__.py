"""Kubeflow Pipelines components of twt: one small file per box of the pipeline.

| module | component | calls | image |
| --- | --- | --- | --- |
| `resolve_settings` | `resolve_settings` | `twt.steps.steps.resolve_settings` | CPU |
| `teacher_settings` | `teacher_settings` | `twt.steps.steps.teacher_settings` | CPU |
| `prepare_questions` | `prepare_questions` | `twt.steps.steps.prepare_questions` | CPU |
| `sample_teacher` | `sample_teacher` | `twt.steps.steps.sample_teacher` | GPU |
| `select_candidates` | `select_candidates` (DCRS) | `twt.steps.steps.select_candidates` | CPU |
| `distill_stage` | `distill_stage` (stages 1, 2, 3) | `twt.steps.steps.distill_stage` | GPU |
| `compress_reasoning` | `compress_reasoning` | `twt.steps.steps.compress_reasoning` | GPU |
| `evaluate_students` | `evaluate_students` | `twt.steps.steps.evaluate_students` | GPU |
| `gate` | `gate` | `twt.steps.steps.gate` | CPU |
| `promote_student` | `promote_student` | `twt.steps.steps.promote_student` | CPU |
| `explain_rejection` | `explain_rejection` | `twt.steps.steps.explain_rejection` | CPU |

Each is a lightweight component on the project's versioned image (`components.images`), with
`install_kfp_package=False` (the images carry the pinned kfp). Module level imports only `kfp` (and
`typing` for named outputs, and the image names); the body imports `twt.steps.steps` and calls the function of
the component's name, mapping KFP's artifact paths onto its arguments. `resolve_settings` (first in the DAG)
validates the pipeline's typed parameters and cuts the configuration into per-step slices
(`twt.steps.settings`); every other component takes only its slice (`settings`, JSON text), so KFP's cache
reruns exactly the steps whose settings changed.
"""

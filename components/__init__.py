"""Kubeflow Pipelines components of twt: one small file per box of the pipeline (DESIGN.md).

| module | component | calls | image |
| --- | --- | --- | --- |
| `prepare_questions` | `prepare_questions` | `twt.tasks.prepare_questions` | CPU |
| `sample_teacher` | `sample_teacher` | `twt.tasks.sample` | GPU |
| `select_candidates` | `select_candidates` (DCRS) | `twt.tasks.select` | CPU |
| `distill_stage` | `distill_stage` (stages 1, 2, 3) | `twt.tasks.distill_stage` | GPU |
| `compress_reasoning` | `compress_reasoning` | `twt.tasks.compress` | GPU |
| `evaluate_students` | `evaluate_students` | `twt.tasks.evaluate` | GPU |
| `gate` | `gate` | `twt.tasks.gate` | CPU |
| `promote_student` | `promote_student` | `twt.tasks.promote` | CPU |
| `explain_rejection` | `explain_rejection` | `twt.tasks.explain_rejection` | CPU |

Each is a lightweight component on the project's versioned image (`components.images`), with
`install_kfp_package=False` (the images carry the pinned kfp). Module level imports only `kfp` (and
`typing` for named outputs, and the image names); the body imports `twt.tasks` and calls one function,
mapping KFP's artifact paths onto its arguments. The run configuration travels as YAML text
(`config_yaml`), so every component sees exactly the configuration the run was submitted with.
"""

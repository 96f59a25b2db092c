"""Where results go: the model registry (versions on S3 with checksums and a card), the pipeline template
registry, Kubeflow Model Registry and KServe serving. On the floors below."""

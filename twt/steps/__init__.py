"""The pipeline's steps, each one function that the KFP components and the CLI call, with the settings slice
it receives, the pipeline's parameters and the reports. On every floor below; never imports kfp."""

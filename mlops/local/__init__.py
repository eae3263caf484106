"""The docker-free local cloud: moto plus a local SageMaker, driven by template.yaml."""

"""A local SageMaker: control plane and runtime that run jobs and endpoints as local processes.

moto's SageMaker stores jobs but runs nothing; this service runs them for real (see
shared/DESIGN.md, "The local cloud"). Entry points: ``service.LocalSageMakerService`` and
``config.SageMakerConfig``. The package imports none of its modules itself, so importing one
of them does not import the whole service (and no module cycles back through here).
"""

# Container jobs run the checkout's code, never code baked into the image (the image holds only
# the environment: containers/genre-classification.def). With the apptainer deployment, the
# package Snakemake imported is copied into .snakemake/genre-classification-code/<key>/ (the
# working directory is bound into every container) and Apptainer puts that copy on the jobs'
# PYTHONPATH (APPTAINERENV_PYTHONPATH); genre_classification/code_export.py.
import os

from snakemake.settings.types import DeploymentMethod

from genre_classification import code_export

_deployment = getattr(workflow, "deployment_settings", None)
if (
    _deployment is not None
    and DeploymentMethod.APPTAINER in _deployment.deployment_method
):
    CONTAINER_CODE = code_export.export_package()
    os.environ.update(code_export.container_environment(CONTAINER_CODE))

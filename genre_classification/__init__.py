"""Music-genre classification: the logic behind the Snakemake workflow in ``workflow/``."""

# The one version of the package, the workflow (logged when it starts, in every result's
# provenance and the MLflow run tags), the container label and the release tag v<version>
# (CHANGELOG.md); pyproject.toml reads it from here. tests/test_release.py checks they agree.
__version__ = "0.3.0"

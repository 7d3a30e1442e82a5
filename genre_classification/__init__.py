"""Music-genre classification: the logic behind the Snakemake workflow in ``workflow/``."""

__version__ = "0.1.0"

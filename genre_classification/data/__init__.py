"""Data stage (workflow/rules/data.smk, split.smk): audio listing, DVC, shards, split, demo data."""

"""Evaluation stage (workflow/rules/train.smk): metrics, cross-validation, the Model Registry."""

"""Predict stage (workflow/rules/predict.smk, the predict command): labels for audio files."""

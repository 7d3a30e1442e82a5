"""Features stage (workflow/rules/features.smk): log-mel HDF5s, packs, the native pack reader."""

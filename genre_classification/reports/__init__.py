"""Reports stage (workflow/rules/reports.smk): track tables, Evidently reports, monitoring."""

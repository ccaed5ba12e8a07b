"""One parser per dataset: official metadata -> (list of ClipSpec, SkipReport)."""

"""The run's config: its fields and variants, their checks, and the record a
workdir keeps of it."""

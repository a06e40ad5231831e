"""Declarative studies: specs, runs, scoring and reports."""

"""Dock panels: project slides, annotation list."""

"""Annotation drawing tools, the annotation document and its undo commands."""

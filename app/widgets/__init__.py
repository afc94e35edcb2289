"""Reusable widgets of the viewer (plots)."""

"""Slide view, tile loader and overlay layers."""

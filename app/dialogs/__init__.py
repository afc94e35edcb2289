"""Dialogs of the main window: errors, class scheme, slide properties, and the Analysis dialogs
(build dataset, train, predict) that the Analysis menu imports lazily."""

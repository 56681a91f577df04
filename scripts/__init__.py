"""Command-line scripts (thin: flags and printing; the work is in ``explorer``); a package so tests import them."""

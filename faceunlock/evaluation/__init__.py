"""Evaluation tools: verification pairs, threshold calibration, unlock simulation.

Imported only by the CLI and tests; never by the runtime path.
"""

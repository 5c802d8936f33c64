"""Checkpoint converters. Installed as `e2_hf.conversion`."""

"""Blinded, randomised reader studies: design, crash-safe sessions, lesion pairing, statistics, reports."""

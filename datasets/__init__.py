"""Canonical patient data: schema, lake layout and IO (local and s3://), FHIR ingestion, synthetic data.

Note: ``datasets`` is also the import name of an unrelated PyPI package; the two cannot share an environment.
"""

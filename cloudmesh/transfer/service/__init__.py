"""The REST service on the OpenAPI contract in openapi.yaml (see app.py)."""

"""Orchestration: the analysis authoring API, the analysis library and the Prefect flows."""

"""Pydantic request/response schemas shared by the gateway and the workers."""

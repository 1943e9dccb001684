"""Turning uploads and generators into numeric tables."""

"""Celery workers that run training jobs.

Set before anything imports torch: OpenMP spin-waiting made a KAN forward 10-100x
slower when another process shared the cores (docs/../shared ANCHORS).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

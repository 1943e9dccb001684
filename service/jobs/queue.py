"""The Celery app: broker, queues, delivery guarantees. Light on purpose.

The gateway imports this module to enqueue jobs by task name and the worker imports it
to register the task, so it imports neither torch nor FastAPI nor ``workers``: the
worker's task module is named as a string in ``include`` and loaded only by the worker.
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from service.config import Settings, get_settings

TRAIN_TASK = "kanserve.train"
QUEUES = ("train", "gpu")


def _transport_options(settings: Settings) -> dict:
    if settings.resolved_broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message after visibility_timeout even while its job
        # still runs: it must outlast the longest allowed job.
        return {"visibility_timeout": settings.broker_visibility_timeout}
    return {}  # the SQLAlchemy transport hands its options to create_engine


def make_celery(settings: Settings) -> Celery:
    app = Celery("kanserve", broker=settings.resolved_broker_url, include=["workers.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="train",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A message is acknowledged only after the job finished, and comes back if the
        # worker dies; the database claim makes a second delivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )
    return app


app = make_celery(get_settings())

"""The Celery task (thin: it calls the pipeline) and the worker's start-up hooks."""
from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
from datetime import timedelta

import torch
from celery import signals
from celery.exceptions import Reject
from kombu.exceptions import ChannelError

from service.config import get_settings
from service.db.session import make_engine, make_session_factory
from service.db.types import utcnow
from service.jobs.queue import QUEUES, TRAIN_TASK, app
from workers.claim import requeue_stale, take_unsent
from workers.pipeline import run_job

log = logging.getLogger(__name__)
_state: dict = {}


def _session_factory():
    # One engine per process: prefork children must not share their parent's connections.
    if _state.get("pid") != os.getpid():
        _state.update(pid=os.getpid(), factory=make_session_factory(make_engine(get_settings().resolved_database_url)))
    return _state["factory"]


def _set_threads(**_kwargs) -> None:
    threads = get_settings().torch_threads
    torch.set_num_threads(threads)
    log.info("torch threads: %d (OMP_WAIT_POLICY=%s)", threads, os.environ.get("OMP_WAIT_POLICY"))


signals.worker_init.connect(_set_threads, weak=False)
signals.worker_process_init.connect(_set_threads, weak=False)


# Set when the worker is asked to stop (SIGTERM: docker stop, Ctrl-C of `kanserve up`): the
# running job stops at its next step and goes back to the queue instead of holding the
# shutdown until it finishes. A multiprocessing Event, created when the worker's main
# process imports this module, before it forks its pool: only the main process hears of the
# shutdown (worker_shutting_down), and prefork children (concurrency > 1) must see it too.
SHUTTING_DOWN = multiprocessing.Event()


@signals.worker_shutting_down.connect(weak=False)
def _on_shutting_down(**_kwargs) -> None:
    SHUTTING_DOWN.set()
    _stop_reaper()


@app.task(name=TRAIN_TASK, bind=True)
def train(self, job_id: str) -> str | None:
    if SHUTTING_DOWN.is_set():
        # Leave the message to a worker that is staying.
        raise Reject("worker is shutting down", requeue=True)
    worker_name = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    # "queued": the job was handed back at shutdown; the next stale-job sweep re-sends it.
    return run_job(job_id, _session_factory(), get_settings(), worker_name, SHUTTING_DOWN)


def sweep_stale_jobs() -> int:
    """Re-sends jobs whose worker is gone (lease lapsed, or handed back) and queued jobs
    whose message the broker lost; returns how many."""
    requeued = requeue_stale(_session_factory())
    for job_id, queue in requeued:
        log.warning("job %s: its worker is gone (lease lapsed, or handed back at shutdown); re-queued on %s",
                    job_id, queue)
        app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
    return len(requeued) + resend_lost_messages()


def resend_lost_messages() -> int:
    # A job is "settled" once its message had time to reach the broker: two sweeps after it was queued.
    settled_before = utcnow() - timedelta(seconds=2 * get_settings().reaper_interval_seconds)
    resent = 0
    for queue in QUEUES:
        waiting = _messages_waiting(queue)  # before the database count: a job taken in between is not re-sent
        for job_id in take_unsent(_session_factory(), queue, waiting, settled_before):
            log.warning("job %s: queued, but the broker no longer holds its message (restarted?); re-sent on %s",
                        job_id, queue)
            app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
            resent += 1
    return resent


def _messages_waiting(queue: str) -> int:
    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:  # the broker does not know the queue: nothing waits in it
            return 0


def _reaper_loop(stop: threading.Event, interval: float) -> None:
    while True:
        try:
            sweep_stale_jobs()
        except Exception:  # the database may be briefly unavailable; try again next round
            log.exception("stale-job sweep failed")
        if stop.wait(interval):
            return


@signals.worker_ready.connect(weak=False)
def _start_reaper(**_kwargs) -> None:
    stop = threading.Event()
    _state["reaper_stop"] = stop
    threading.Thread(target=_reaper_loop, args=(stop, get_settings().reaper_interval_seconds),
                     name="stale-job-reaper", daemon=True).start()


@signals.worker_shutdown.connect(weak=False)
def _stop_reaper(**_kwargs) -> None:
    if "reaper_stop" in _state:
        _state["reaper_stop"].set()

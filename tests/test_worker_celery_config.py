"""The Celery app's delivery guarantees and routing, as configured for each broker."""
from __future__ import annotations

from service.config import Settings
from service.jobs.queue import TRAIN_TASK, make_celery


def test_redis_broker_delivery_settings_outlast_the_longest_job():
    settings = Settings(broker_url="redis://127.0.0.1:6379/3", max_job_seconds=7200)
    conf = make_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > settings.max_job_seconds
    assert {queue.name for queue in conf.task_queues} == {"train", "gpu"}
    assert conf.task_default_queue == "train"


def test_embedded_broker_needs_no_server_and_gets_no_redis_options(tmp_path):
    settings = Settings(data_dir=tmp_path)
    app = make_celery(settings)
    assert app.conf.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    assert app.conf.broker_transport_options == {}  # the SQLAlchemy transport passes them to create_engine
    # A message sent by name goes through the real transport and comes out with the job id.
    app.send_task(TRAIN_TASK, args=["job-123"], queue="train")
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue("train").get(timeout=5)
        assert message.headers["task"] == TRAIN_TASK and message.payload[0] == ["job-123"]
        message.ack()


def test_torch_threads_are_cores_divided_by_concurrency():
    assert Settings(worker_cores=8, worker_concurrency=2).torch_threads == 4
    assert Settings(worker_cores=2, worker_concurrency=4).torch_threads == 1

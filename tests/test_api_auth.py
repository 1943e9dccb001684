"""API keys: made and revoked with the CLI, stored hashed, bootstrap keys from the settings."""
from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from kanserve_harness import migrated_sqlite_settings
from service import cli
from service.app import create_app
from service.auth import hash_key
from service.db.models import ApiKey


def test_cli_keys_create_list_revoke(tmp_path, monkeypatch, capsys):
    settings = migrated_sqlite_settings(tmp_path)
    monkeypatch.setenv("KANSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KANSERVE_BROKER_URL", "memory://")
    cli.get_settings.cache_clear()
    try:
        assert cli.main(["keys", "create", "--name", "alice"]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("ks_") and len(key) > 40

        app = create_app(settings)
        with app.state.session_factory() as db:
            row = db.scalar(sa.select(ApiKey).where(ApiKey.name == "alice"))
            assert row.key_hash == hash_key(key) and key not in (row.key_hash, row.prefix)
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/v1/jobs", headers=headers).status_code == 200

            assert cli.main(["keys", "list"]) == 0
            listing = capsys.readouterr().out
            assert row.id in listing and "active" in listing and key not in listing

            assert cli.main(["keys", "revoke", row.prefix]) == 0
            revoked = client.get("/v1/jobs", headers=headers)
            assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
            assert cli.main(["keys", "revoke", "no-such-key"]) == 1
    finally:
        cli.get_settings.cache_clear()


def test_bootstrap_keys_from_settings_work_and_own_their_jobs(tmp_path):
    settings = migrated_sqlite_settings(tmp_path, api_keys="ks_bootstrap-one, ks_bootstrap-two")
    with TestClient(create_app(settings)) as client:
        one = {"Authorization": "Bearer ks_bootstrap-one"}
        two = {"Authorization": "Bearer ks_bootstrap-two"}
        dataset = client.post("/v1/datasets", json={"columns": ["a", "b"], "rows": [[1, 2], [3, 4]]}, headers=one)
        assert dataset.status_code == 201
        assert client.get(f"/v1/datasets/{dataset.json()['id']}", headers=two).status_code == 404
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer ks_bootstrap"}).status_code == 401
    # Restarting registers nothing twice.
    with TestClient(create_app(settings)) as client:
        with client.app.state.session_factory() as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 2


def test_an_unmigrated_database_stops_start_up_with_what_to_run(tmp_path):
    import pytest

    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path, broker_url="memory://"))
    with pytest.raises(RuntimeError, match="kanserve db upgrade"):
        with TestClient(app):
            pass


def test_a_key_revoked_in_this_process_stops_serving_at_once(tmp_path, monkeypatch):
    import numpy as np

    from onnx_graphs import affine_model
    from serving_setup import serving_env
    from service.auth import revoke_key
    from service.db.session import make_session_factory

    # Remembered key checks and lookups would otherwise last an hour.
    monkeypatch.setenv("KANSERVE_MODEL_LOOKUP_TTL_S", "3600")
    env = serving_env(tmp_path)
    env.register("m", 1, affine_model(np.ones((2, 1), np.float32), np.zeros(1, np.float32), "input", "output"))
    rows = {"inputs": [[1.0, 2.0]]}
    tensor = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    with TestClient(env.app, headers={"Authorization": f"Bearer {env.key}"}) as client:
        assert client.post("/v1/models/m/predict", json=rows).status_code == 200
        assert client.post("/v2/models/m/infer", json=tensor).status_code == 200
        assert env.app.state.inference.recent(env.key, "m", None, "spline") is not None  # remembered

        with make_session_factory(env.engine)() as db:
            assert [row.id for row in revoke_key(db, env.key_id)] == [env.key_id]
        predicted = client.post("/v1/models/m/predict", json=rows)
        assert predicted.status_code == 401 and "revoked" in predicted.json()["detail"]
        assert client.post("/v2/models/m/infer", json=tensor).status_code == 401
        assert client.get("/v2/models/m").status_code == 401
        # Another key is untouched: it is refused the model as not its own, not as revoked.
        other = client.post("/v1/models/m/predict", json=rows, headers={"Authorization": f"Bearer {env.other_key}"})
        assert other.status_code == 404

"""Prefect deployments: registered against the test harness API and read back with the client."""
from __future__ import annotations

import pytest

from flows.deploy import NIGHTLY, WEEKLY, build_deployments, describe


@pytest.fixture
def data_dir(tmp_path):
    """A directory the weekly retrain can ingest (only events.csv is required)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n")
    return data


def test_deployments_register_with_schedules_and_absolute_paths(prefect_harness, tmp_path, data_dir, monkeypatch):
    from prefect import get_client
    from prefect.flows import load_flow_from_entrypoint

    from flows.nightly import nightly
    from flows.retrain import retrain

    monkeypatch.chdir(tmp_path)  # relative paths below must reach the deployments absolute
    deployments = build_deployments(cron="15 1 * * *", retrain_cron="30 4 * * 6", timezone="Europe/Paris",
                                    warehouse_dir="wh", checkpoint_dir="ck", data_dir="data", profile="tiny")
    ids = [d.apply() for d in deployments]
    assert len(set(ids)) == 2

    paths = {"warehouse_dir": str(tmp_path / "wh"), "checkpoint_dir": str(tmp_path / "ck")}
    expected = {
        f"nightly/{NIGHTLY}": ("nightly", "15 1 * * *", {**paths, "data_dir": str(data_dir)},
                               "flows.nightly.nightly", nightly),
        f"retrain/{WEEKLY}": ("retrain", "30 4 * * 6", {**paths, "data_dir": str(data_dir), "profile": "tiny"},
                              "flows.retrain.retrain", retrain),
    }
    with get_client(sync_client=True) as client:
        for full_name, (flow_name, cron, parameters, entrypoint, flow) in expected.items():
            d = client.read_deployment_by_name(full_name)
            assert d.id in ids
            assert client.read_flow(d.flow_id).name == flow_name
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules] == \
                [(cron, "Europe/Paris", True)]
            assert d.parameters == parameters
            assert d.entrypoint == entrypoint
            assert load_flow_from_entrypoint(d.entrypoint) is flow  # importable from anywhere
            assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1
            assert d.tags == ["recs"]
        # Re-applying (a restarted `recs deploy`) updates in place: still one deployment per name.
        build_deployments(cron="0 5 * * *", warehouse_dir="wh", checkpoint_dir="ck")[0].apply()
        again = client.read_deployment_by_name(f"nightly/{NIGHTLY}")
        assert again.id == ids[0]
        assert [(s.schedule.cron, s.schedule.timezone) for s in again.schedules] == [("0 5 * * *", "UTC")]


def test_describe_says_what_is_served_and_how_to_trigger(tmp_path):
    text = describe(build_deployments(warehouse_dir=str(tmp_path / "wh"), checkpoint_dir=str(tmp_path / "ck")))
    lines = text.splitlines()
    assert "  nightly/nightly-scoring: cron '0 2 * * *' (UTC)" in lines
    assert "  retrain/weekly-retrain: cron '0 3 * * 0' (UTC)" in lines
    assert f"      warehouse_dir = {tmp_path / 'wh'}" in lines
    assert "  prefect deployment run 'nightly/nightly-scoring'" in lines
    assert "  prefect deployment run 'retrain/weekly-retrain'" in lines


@pytest.mark.parametrize("kwargs, error, message", [
    ({"cron": "61 2 * * *"}, ValueError, "invalid cron '61 2 * * *': expected 5 fields"),
    ({"cron": "0 2 * *"}, ValueError, "invalid cron '0 2 * *': expected 5 fields"),
    ({"retrain_cron": "every sunday"}, ValueError, "invalid retrain cron 'every sunday': expected 5 fields"),
    ({"timezone": "Mars/Olympus"}, ValueError, "unknown timezone 'Mars/Olympus': use an IANA name"),
    ({"timezone": "CET+1"}, ValueError, "unknown timezone 'CET+1'"),
    ({"profile": "huge"}, ValueError, "unknown profile 'huge'"),
    ({"data_dir": "/nonexistent/recs-data"}, FileNotFoundError, "events.csv (or events.csv.gz) not found in /nonexistent"),
])
def test_bad_settings_fail_up_front_with_a_clear_error(kwargs, error, message):
    with pytest.raises(error) as info:
        build_deployments(**kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)

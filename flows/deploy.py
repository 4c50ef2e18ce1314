"""Prefect deployments: nightly scoring and the weekly retrain, served by one process.

`build_deployments` returns two RunnerDeployments:
- `nightly/nightly-scoring`: flow `nightly` (flows/nightly.py: ingest `data_dir` when given,
  rebuild the sequences with the previous build's settings, score every customer, warn when the
  models are older than the data) on `cron` (default 02:00 daily);
- `retrain/weekly-retrain`: flow `retrain` on `retrain_cron` (default 03:00 on Sundays),
both in `timezone`. Their parameters carry ABSOLUTE paths: a deployment run may start in
another working directory. Entrypoints are module paths (`flows.nightly.nightly`), importable
wherever the project is installed. Each deployment runs at most one flow run at a time.
`serve_deployments` registers them and polls for scheduled runs (`recs deploy`).
"""
from __future__ import annotations

from pathlib import Path

NIGHTLY = "nightly-scoring"
WEEKLY = "weekly-retrain"


def validate_cron(cron: str, what: str = "cron") -> str:
    """The cron string, or ValueError saying what is wrong with it."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:  # pydantic's ValidationError: a multi-line report, replaced by one line
        raise ValueError(f"invalid {what} {cron!r}: expected 5 fields 'minute hour day-of-month month day-of-week', "
                         "e.g. '0 2 * * *' (02:00 daily) or '0 3 * * 0' (03:00 on Sundays)") from None
    return cron


def validate_timezone(timezone: str) -> str:
    """The timezone name, or ValueError when it is not an IANA name Prefect knows."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron="0 0 * * *", timezone=timezone)
    except ValueError:
        raise ValueError(f"unknown timezone {timezone!r}: use an IANA name such as 'UTC' or 'Europe/Paris'") from None
    return timezone


def build_deployments(cron: str = "0 2 * * *", retrain_cron: str = "0 3 * * 0", timezone: str = "UTC",
                      warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
                      data_dir: str | None = None, profile: str = "cpu", nightly_parameters: dict | None = None,
                      weekly_parameters: dict | None = None) -> list:
    """[nightly-scoring, weekly-retrain] RunnerDeployments (not yet registered).

    nightly_parameters / weekly_parameters: more parameters of flow `score_all` (passed by the
    nightly flow as `scoring`) / `retrain`
    (the config file's [score_all] / [retrain] sections); the paths, data_dir and profile given
    here win.

    Raises ValueError for a bad cron string, timezone or profile, FileNotFoundError when
    data_dir has no events.csv: before anything is registered or served.
    """
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from model.config import PROFILES  # plain dataclasses: no JAX import

    validate_cron(cron, "cron")
    validate_cron(retrain_cron, "retrain cron")
    validate_timezone(timezone)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    paths = {"warehouse_dir": str(Path(warehouse_dir).resolve()), "checkpoint_dir": str(Path(checkpoint_dir).resolve())}
    data = None
    if data_dir is not None:
        from recs.ingest import locate_inputs

        locate_inputs(Path(data_dir))  # a weekly run that cannot find its data should fail now, not on Sunday
        data = str(Path(data_dir).resolve())

    from flows.nightly import nightly as nightly_flow
    from flows.retrain import retrain

    scoring = {"scoring": dict(nightly_parameters)} if nightly_parameters else {}
    nightly = nightly_flow.to_deployment(
        name=NIGHTLY, schedule=Cron(cron, timezone=timezone), parameters={**scoring, **paths, "data_dir": data},
        concurrency_limit=1,
        tags=["recs"], entrypoint_type=EntrypointType.MODULE_PATH,
        description="Ingest today's events, rebuild the sequences, score every customer with the current models "
                    "(warns when they are older than the data).")
    weekly = retrain.to_deployment(
        name=WEEKLY, schedule=Cron(retrain_cron, timezone=timezone),
        parameters={**(weekly_parameters or {}), **paths, "data_dir": data, "profile": profile}, concurrency_limit=1,
        tags=["recs"], entrypoint_type=EntrypointType.MODULE_PATH,
        description="Rebuild sequences, retrain and evaluate both models, refit on all data, rescore.")
    return [nightly, weekly]


def describe(deployments: list) -> str:
    """What is served, on which schedule, with which parameters, and how to trigger a run now."""
    from prefect.settings import PREFECT_API_URL

    lines = ["Serving Prefect deployments:"]
    for d in deployments:
        schedule = d.schedules[0].schedule
        lines.append(f"  {d.flow_name}/{d.name}: cron '{schedule.cron}' ({schedule.timezone})")
        lines += [f"      {k} = {v}" for k, v in d.parameters.items()]
    lines += ["Trigger a run now (from another shell):"]
    lines += [f"  prefect deployment run '{d.flow_name}/{d.name}'" for d in deployments]
    if not PREFECT_API_URL.value():
        lines += ["Note: PREFECT_API_URL is not set, so this serves against a temporary local Prefect server",
                  "that stops with this process. For schedules that survive: `prefect server start`, then",
                  "`export PREFECT_API_URL=http://127.0.0.1:4200/api` in this shell and the triggering one."]
    return "\n".join(lines)


def serve_deployments(cron: str = "0 2 * * *", retrain_cron: str = "0 3 * * 0", timezone: str = "UTC",
                      warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
                      data_dir: str | None = None, profile: str = "cpu", nightly_parameters: dict | None = None,
                      weekly_parameters: dict | None = None) -> None:
    """Register both deployments and serve them until interrupted (Ctrl-C pauses their schedules)."""
    import prefect

    deployments = build_deployments(cron=cron, retrain_cron=retrain_cron, timezone=timezone,
                                    warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir,
                                    data_dir=data_dir, profile=profile, nightly_parameters=nightly_parameters,
                                    weekly_parameters=weekly_parameters)
    print(describe(deployments), flush=True)
    prefect.serve(*deployments)


if __name__ == "__main__":
    serve_deployments()

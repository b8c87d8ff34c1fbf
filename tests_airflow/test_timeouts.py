"""Every task of the example DAGs has an execution_timeout, set from the run's `task_timeout_hours`
param, and a flex template task whose Dataflow job never ends as the operator expects stops at it.

Real Airflow (dag.test(), its task runner and in-process Execution API, the Google provider's
operator, hook and trigger); only the Dataflow API is faked: the hook's real googleapiclient
client talks to FakeDataflow through a fake HTTP transport (the REST calls launch, jobs.get and
jobs.update), and the trigger's async client's get_job (jobs.get over gRPC) reads the same jobs.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest

from tests.helpers.airflow_dags import DAG_IDS, dag_bag

TINY_TIMEOUT_HOURS = 0.001  # 3.6 s


class FakeDataflow:
    """Dataflow's REST API for one flex template launch: the job is created in `state` and stays there
    until an update asks for another state (a cancel)."""

    def __init__(self, state: str):
        self.state = state
        self.jobs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []

    # the httplib2.Http interface googleapiclient uses
    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        import httplib2

        path = uri.split("?")[0].split("googleapis.com/")[-1]
        self.calls.append((method, path))
        launch = re.fullmatch(r"v1b3/projects/([^/]+)/locations/([^/]+)/flexTemplates:launch", path)
        job = re.fullmatch(r"v1b3/projects/([^/]+)/locations/([^/]+)/jobs/([^/]+)", path)
        if launch and method == "POST":
            request = json.loads(body)["launchParameter"]
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = {
                "id": job_id,
                "name": request["jobName"],
                "projectId": launch[1],
                "location": launch[2],
                "type": "JOB_TYPE_BATCH",
                "currentState": self.state,
            }
            answer = {"job": self.jobs[job_id]}
        elif job and method == "GET":
            answer = self.jobs[job[3]]
        elif job and method == "PUT":  # jobs.update: requestedState
            self.jobs[job[3]]["currentState"] = json.loads(body)["requestedState"]
            answer = self.jobs[job[3]]
        else:
            return httplib2.Response({"status": "404"}), b'{"error": {"code": 404}}'
        return httplib2.Response({"status": "200"}), json.dumps(answer).encode()

    def client(self):
        from googleapiclient.discovery import build

        return build("dataflow", "v1b3", http=self, static_discovery=True)


@pytest.fixture
def dataflow(monkeypatch):
    """Swap the Dataflow API for a FakeDataflow (state set by the test); nothing leaves the machine."""
    from airflow.providers.google.cloud.hooks.dataflow import AsyncDataflowHook, DataflowHook
    from google.cloud.dataflow_v1beta3 import Job, JobState

    fake = FakeDataflow("JOB_STATE_RUNNING")
    monkeypatch.setattr(DataflowHook, "get_conn", lambda self: fake.client())

    async def get_job(self, job_id, project_id=None, job_view=None, location=None):
        fake.calls.append(("GET(async)", job_id))
        return Job(id=job_id, current_state=JobState[fake.jobs[job_id]["currentState"]])

    monkeypatch.setattr(AsyncDataflowHook, "get_job", get_job)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": "my-project"}}),
    )
    return fake


def flex_conf(**extra) -> dict:
    return {
        "gcp_project": "my-project",
        "region": "europe-west1",
        "extract_template": "gs://my-bucket/templates/efm-extract.json",
        "classify_template": "gs://my-bucket/templates/efm-classify.json",
        "bbox": "5.9,45.8,6.2,46.0",
        "years": "2022",
        "embeddings": "gs://my-bucket/efm/geneva.zarr",
        "model": "gs://my-bucket/efm/model.skops",
        "classes": "gs://my-bucket/efm/geneva-classes.zarr",
        "temp_location": "gs://my-bucket/tmp",
        **extra,
    }


def test_every_task_of_every_dag_has_an_execution_timeout_from_a_param():
    import efm_airflow

    bag = dag_bag()
    assert set(bag.dag_ids) == DAG_IDS
    for dag_id in DAG_IDS:
        dag = bag.get_dag(dag_id)
        param = dag.params.get_param("task_timeout_hours")
        assert param.value == efm_airflow.TASK_TIMEOUT_HOURS == 24
        assert param.schema["type"] == "number" and param.schema["exclusiveMinimum"] == 0
        for task in dag.tasks:
            assert task.execution_timeout == timedelta(hours=24), (dag_id, task.task_id)
            # the run's param replaces it just before execute (Airflow reads it after pre_execute)
            assert task._pre_execute_hook is efm_airflow.apply_task_timeout, (dag_id, task.task_id)
    task = bag.get_dag("efm_regression_maps_beam").get_task("train")
    efm_airflow.apply_task_timeout({"params": {"task_timeout_hours": 0.5}, "task": task})
    assert task.execution_timeout == timedelta(minutes=30)


# a thread, not SIGALRM: Airflow's own execution_timeout uses the alarm signal
@pytest.mark.timeout(300, method="thread")
def test_a_flex_task_whose_job_never_ends_fails_at_its_timeout(dataflow):
    """Not deferred: the operator polls a job that stays RUNNING; the run's task_timeout_hours (3.6 s)
    raises AirflowTaskTimeout in the task, which fails, and the operator cancels the job (on_kill)."""
    from airflow.utils.state import DagRunState

    dag = dag_bag().get_dag("efm_extract_classify_flex")
    for task in dag.tasks:
        task.poll_sleep = 1
        assert not task.deferrable
    run = dag.test(run_conf=flex_conf(task_timeout_hours=TINY_TIMEOUT_HOURS))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.FAILED, states
    assert states["extract"] == "failed" and states["classify"] in ("upstream_failed", None)
    (job,) = dataflow.jobs.values()
    assert job["name"].startswith("efm-extract")
    # polled, then cancelled: on_kill runs only when execution_timeout raises AirflowTaskTimeout
    assert ("GET", "v1b3/projects/my-project/locations/europe-west1/jobs/job-1") in dataflow.calls
    assert ("PUT", "v1b3/projects/my-project/locations/europe-west1/jobs/job-1") in dataflow.calls
    assert job["currentState"] == "JOB_STATE_CANCELLED"


@pytest.mark.timeout(300, method="thread")
def test_a_deferred_flex_task_on_a_cancelled_job_is_bounded_by_its_timeout(dataflow, monkeypatch):
    """Deferred: the provider's trigger never ends on JOB_STATE_CANCELLED, and Airflow 3 does not apply
    execution_timeout to a deferred task; the task's deferral must carry the run's timeout itself
    (the scheduler fails the task with TaskDeferralTimeout when it passes)."""
    import airflow.sdk.definitions.dag as dag_module
    import airflow.sdk.execution_time.supervisor as supervisor
    from airflow.sdk.exceptions import TaskDeferralTimeout
    from airflow.utils.state import DagRunState

    dataflow.state = "JOB_STATE_CANCELLED"  # cancelled (e.g. from the console) as soon as it exists
    deferrals = []
    run_task_in_process = supervisor.run_task_in_process

    def recording(*args, **kwargs):  # the real task runner; keep the DeferTask it sends
        result = run_task_in_process(*args, **kwargs)
        if type(result.msg).__name__ == "DeferTask":
            deferrals.append(result.msg)
        return result

    monkeypatch.setattr(supervisor, "run_task_in_process", recording)
    polls_without_event = []

    def triggerer(trigger, ti):
        """dag.test runs a trigger inline until it fires, with no timeout. Run the provider's real
        trigger for a while to see it never fires on CANCELLED, then end the wait as the scheduler
        does once the deferral's timeout has passed (dag.test has no scheduler)."""
        assert type(trigger).__name__ == "TemplateJobStartTrigger"
        trigger.poll_sleep = 0.05

        async def first_event():
            return await anext(trigger.run(), None)

        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(first_event(), timeout=2))
        polls_without_event.append(sum(c[0] == "GET(async)" for c in dataflow.calls))
        raise TaskDeferralTimeout("Trigger timeout")

    monkeypatch.setattr(dag_module, "_run_inline_trigger", triggerer)
    dag = dag_bag().get_dag("efm_extract_classify_flex")
    for (
        task
    ) in dag.tasks:  # as with [operators] default_deferrable = True (Cloud Composer's choice)
        task.deferrable, task.wait_until_finished = True, False
    run = dag.test(run_conf=flex_conf(task_timeout_hours=TINY_TIMEOUT_HOURS))
    assert run.state == DagRunState.FAILED
    assert polls_without_event and polls_without_event[0] >= 3  # CANCELLED, polled, no event
    (deferral,) = deferrals
    assert deferral.classpath.endswith("TemplateJobStartTrigger")
    assert deferral.trigger_timeout == timedelta(hours=TINY_TIMEOUT_HOURS)

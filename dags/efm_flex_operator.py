"""DataflowStartFlexTemplateOperator for the flex DAGs, with a deferral that ends at the task's timeout.

The Google provider's TemplateJobStartTrigger (what a deferred DataflowStartFlexTemplateOperator
waits in) ends only when the job is JOB_STATE_DONE, JOB_STATE_FAILED or JOB_STATE_STOPPED
(airflow/providers/google/cloud/triggers/dataflow.py, apache-airflow-providers-google 22.8.0): a job
CANCELLED from the console, or one that never leaves QUEUED, keeps the task deferred forever. And
Airflow 3 does not apply a task's execution_timeout while it is deferred (the Execution API stores
only the timeout given to defer(): apache/airflow#69678). So this operator passes the task's
execution_timeout to defer(): the scheduler fails the task with TaskDeferralTimeout once it has
passed (counted from the launch). Not deferred, the operator polls in the task itself, where
execution_timeout raises AirflowTaskTimeout and the operator cancels the job (on_kill).
"""

from __future__ import annotations

from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator


class EfmFlexTemplateOperator(DataflowStartFlexTemplateOperator):
    def defer(self, *, trigger, method_name, kwargs=None, timeout=None):
        if timeout is None:
            timeout = self.execution_timeout  # set from the run's task_timeout_hours (efm_airflow)
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

"""Jobs: a driver program submitted to a cluster, run by an agent, followed from anywhere.

    records      a job's record in the control store (kv namespace "lightray/jobs")
    supervisor   the actor on the job's node that starts its driver, keeps its log, stops it
    submission   the Python API: submit_job, get_job_status/info/logs, tail_job_logs,
                 stop_job, list_jobs
    cli          ``lightray job submit|status|logs|stop|list``
"""
from .records import JobNotFoundError
from .submission import (get_job_info, get_job_logs, get_job_status, list_jobs, stop_job,
                         submit_job, tail_job_logs)

__all__ = ["JobNotFoundError", "get_job_info", "get_job_logs", "get_job_status", "list_jobs",
           "stop_job", "submit_job", "tail_job_logs"]

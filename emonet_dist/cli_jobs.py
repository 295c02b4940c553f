"""The job commands of ``emonet``: ``jobs run`` (a spec's steps in this process), ``submit`` and ``jobs list|logs|stop``
(the Ray job client), and ``demo`` (the shipped demo spec). They print; the work is in
:mod:`emonet_dist.pipeline` and :mod:`emonet_dist.submit`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def cmd_jobs_run(args) -> int:
    from .pipeline.runner import marker_line, run_spec
    from .pipeline.spec import load_spec

    spec = load_spec(args.spec, list(args.overrides), args.profile, args.group, runs_here=True)
    outcome = run_spec(spec, on_record=lambda rec: print(marker_line(rec), flush=True))
    print(f"[job {spec.name}] finished: {len(outcome.records)} run(s) in {outcome.seconds:.0f} s")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo, summary

    result = run_demo(Path(args.out), list(args.overrides), smoke=args.smoke)
    print("\n".join(summary(result)), flush=True)
    return 0


def cmd_submit(args) -> int:
    from .submit import submit

    job_id, spec, client = submit(args.spec, args.address, list(args.overrides), args.env, args.no_pip,
                                  args.profile, args.group)
    print(f"submitted job {job_id} ({spec.name}: {', '.join(s.id for s in spec.steps)})", flush=True)
    if not args.follow:
        print(f"follow it with: emonet jobs logs {job_id} --follow")
        return 0
    return _follow(client, job_id, args.timeout)


def _follow(client, job_id: str, timeout: float) -> int:
    """Stream the logs until the job ends; print its MLflow runs; 0 when it SUCCEEDED, 1 otherwise."""
    from .submit import failure, follow_job, mlflow_links

    status, logs = follow_job(client, job_id, timeout, _write)
    print("\n".join(mlflow_links(logs)))
    if status != "SUCCEEDED":
        print(f"job {job_id} {status}: {failure(logs, client.get_job_info(job_id).message)}", file=sys.stderr)
        return 1
    print(f"job {job_id} SUCCEEDED")
    return 0


def cmd_jobs_list(args) -> int:
    from .submit import job_client, job_rows

    print(f"{'job id':44s} {'status':10s} {'started':19s} {'took':>7s}  name")
    for r in job_rows(job_client(args.address)):
        print(f"{r['id']:44s} {r['status']:10s} {r['started']:19s} {r['took']:>7s}  {r['name']}")
    return 0


def cmd_jobs_logs(args) -> int:
    from .submit import job_client, job_logs

    client = job_client(args.address)
    if args.follow:
        return _follow(client, args.job_id, args.timeout)
    logs, status, why = job_logs(client, args.job_id)
    print(logs, end="")
    if why is not None:  # the traceback is above; this line says why it ended
        print(f"job {args.job_id} {status}: {why}", file=sys.stderr)
    return 0


def cmd_jobs_stop(args) -> int:
    from .submit import job_client, wait_terminal

    client = job_client(args.address)
    stopped = client.stop_job(args.job_id)
    status = wait_terminal(client, args.job_id, args.timeout) if args.wait else str(client.get_job_status(args.job_id))
    print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}; status {status}")
    return 0

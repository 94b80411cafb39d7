import sys

from joulebench.jobs import RunIncomplete, job_context, run_status

sm = snakemake  # noqa: F821
try:
    with job_context(sm.log[0], sm.threads):
        measured = [*sm.input.evaluations, *sm.input.probes, *sm.input.finalists]
        run_status(measured, list(sm.input.trainings), sm.output.status)
except RunIncomplete as incomplete:
    print(incomplete, file=sys.stderr)
    sys.exit(1)

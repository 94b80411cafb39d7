from pathlib import Path

from joulebench.jobs import job_context, report

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    report(sm.input.summary, dict(sm.params.config), str(Path(sm.input.template).parent), sm.output.html, sm.output.pdf)

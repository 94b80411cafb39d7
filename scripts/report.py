from pathlib import Path

from joulebench.jobs import decoded, job_context, report

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, image=sm.params.image):
    config = decoded(sm.params)["config"]
    report(sm.input.summary, config, str(Path(sm.input.template).parent), sm.output.html, sm.output.pdf)

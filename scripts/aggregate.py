from joulebench.jobs import aggregate, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    aggregate(
        list(sm.input.evaluations),
        list(sm.input.trainings),
        list(sm.input.selections),
        sm.params.w,
        sm.params.top_k,
        sm.output.csv,
        sm.output.json,
    )

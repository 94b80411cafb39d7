from joulebench.jobs import aggregate, decoded, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    params = decoded(sm.params)
    aggregate(
        list(sm.input.evaluations),
        list(sm.input.trainings),
        list(sm.input.selections),
        params["ranking"],
        params["top_k"],
        sm.output.csv,
        sm.output.json,
        builds=list(sm.input.builds),
        lifecycle=params["lifecycle"],
        probes=list(sm.input.probes),
        finalists=list(sm.input.finalists),
    )

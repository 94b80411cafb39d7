from joulebench.jobs import decoded, job_context, select_for_pruning

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    params = decoded(sm.params)
    select_for_pruning(
        list(sm.input.evaluations), list(sm.input.trainings), params["ranking"], params["top_k"], sm.output.selection
    )

from joulebench.jobs import job_context, select_for_pruning

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    select_for_pruning(
        list(sm.input.evaluations), list(sm.input.trainings), sm.params.w, sm.params.top_k, sm.output.selection
    )

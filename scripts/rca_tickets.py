from joulebench.jobs import decoded, job_context, make_rca_tickets

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    make_rca_tickets(decoded(sm.params)["dataset"], sm.output.tickets)

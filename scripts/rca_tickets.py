from joulebench.jobs import job_context, make_rca_tickets

with job_context(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_rca_tickets(snakemake.params.dataset, snakemake.output.tickets)  # noqa: F821

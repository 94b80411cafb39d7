from joulebench.jobs import build_model, job_context

with job_context(snakemake.log[0], snakemake.threads):  # noqa: F821
    build_model(
        snakemake.params.model,  # noqa: F821
        snakemake.input.train,  # noqa: F821
        snakemake.params.energy,  # noqa: F821
        snakemake.output.model,  # noqa: F821
        snakemake.output.record,  # noqa: F821
    )

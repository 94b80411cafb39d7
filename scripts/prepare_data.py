from pathlib import Path

from joulebench.jobs import job_context, prepare_data

with job_context(snakemake.log[0], snakemake.threads):  # noqa: F821
    prepare_data(
        snakemake.params.dataset,  # noqa: F821
        dict(snakemake.input.items()),  # noqa: F821
        str(Path(snakemake.output.train).parent),  # noqa: F821
    )

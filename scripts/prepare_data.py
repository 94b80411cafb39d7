from pathlib import Path

from joulebench.jobs import decoded, job_context, prepare_data

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    data_files = {name: path for name, path in sm.input.items() if name != "code"}
    prepare_data(decoded(sm.params)["dataset"], data_files, str(Path(sm.output.train).parent))

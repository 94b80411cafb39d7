from joulebench.jobs import finetune, job_context
from joulebench.models import resolve_model_path

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    finetune(
        cell=sm.params.cell,
        model_path=resolve_model_path(sm.wildcards.model, sm.params.model, sm.input.base or None),
        model=sm.params.model,
        train=sm.input.train,
        training=sm.params.training,
        energy=sm.params.energy,
        adapter_dir=sm.output.adapter,
        record=sm.output.record,
    )

from joulebench.jobs import finetune, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    finetune(
        cell=sm.params.cell,
        model=sm.params.model,
        built_model=sm.input.base or None,
        train=sm.input.train,
        training=sm.params.training,
        energy=sm.params.energy,
        adapter_dir=sm.output.adapter,
        record=sm.output.record,
    )

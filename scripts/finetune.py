from joulebench.jobs import decoded, finetune, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, getattr(sm.resources, "gpu", 0), image=sm.params.image,
                 energy=sm.params.energy):
    params = decoded(sm.params)
    finetune(
        cell=params["cell"],
        model=params["model"],
        built_model=sm.input.base or None,
        train=sm.input.train,
        training=params["training"],
        energy=params["energy"],
        adapter_dir=sm.output.adapter,
        record=sm.output.record,
        checkpoint=params["checkpoint"],
        software=params["software"],
        variant=params["variant"],
    )

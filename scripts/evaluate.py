from joulebench.jobs import decoded, evaluate, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, getattr(sm.resources, "gpu", 0), image=sm.params.image,
                 energy=sm.params.energy):
    params = decoded(sm.params)
    evaluate(
        cell=params["cell"],
        model=params["model"],
        built_model=sm.input.base or None,
        adapter_dir=sm.input.adapter or None,
        training_record=sm.input.training or None,
        classes=sm.input.classes,
        test=sm.input.test,
        train=sm.input.train,
        pruning=params["pruning"],
        early_exit=params["early_exit"],
        merge=params["merge"],
        training=params["training"],
        generation=params["generation"],
        metrics=params["metrics"],
        energy=params["energy"],
        calibration=params["calibration"],
        sparse_kernels=params["sparse_kernels"],
        record=sm.output.record,
        predictions=sm.output.predictions,
    )

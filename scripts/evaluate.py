from joulebench.jobs import evaluate, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    evaluate(
        cell=sm.params.cell,
        model=sm.params.model,
        built_model=sm.input.base or None,
        adapter_dir=sm.input.adapter or None,
        test=sm.input.test,
        train=sm.input.train,
        pruning=sm.params.pruning,
        calibration=sm.params.calibration,
        sparse_kernels=sm.params.sparse_kernels,
        training=sm.params.training,
        generation=sm.params.generation,
        metrics=sm.params.metrics,
        energy=sm.params.energy,
        record=sm.output.record,
        predictions=sm.output.predictions,
    )

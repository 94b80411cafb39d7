from joulebench.jobs import decoded, job_context, measure_finalists

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, getattr(sm.resources, "gpu", 0), image=sm.params.image,
                 energy=sm.params.energy):
    measure_finalists(
        dataset=sm.wildcards.dataset,
        evaluations=list(sm.input.evaluations),
        trainings=list(sm.input.trainings),
        train=sm.input.train,
        test=sm.input.test,
        config=decoded(sm.params)["config"],
        record=sm.output.record,
    )

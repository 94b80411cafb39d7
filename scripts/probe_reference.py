from joulebench.jobs import decoded, job_context, probe_reference

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, getattr(sm.resources, "gpu", 0), image=sm.params.image,
                 energy=sm.params.energy):
    params = decoded(sm.params)
    probe_reference(
        cell=params["cell"],
        model=params["model"],
        built_model=sm.input.base or None,
        test=sm.input.test,
        trainings=params["trainings"],
        generation=params["generation"],
        energy=params["energy"],
        probe=int(sm.wildcards.index),
        record=sm.output.record,
    )

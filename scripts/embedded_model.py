from joulebench.jobs import build_model, decoded, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads, getattr(sm.resources, "gpu", 0), image=sm.params.image,
                 energy=sm.params.energy):
    params = decoded(sm.params)
    build_model(params["model"], sm.input.train, params["energy"], sm.output.model, sm.output.record)

from joulebench.jobs import class_centroids, decoded, job_context

sm = snakemake  # noqa: F821
with job_context(sm.log[0], sm.threads):
    class_centroids(train=sm.input.train, metrics=decoded(sm.params)["metrics"], out=sm.output.classes)

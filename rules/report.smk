rule aggregate:
    input:
        evaluations=eval_records,
        trainings=train_records,
        selections=selection_records,
        builds=build_records,
        probes=noise_probe_records,
        finalists=finalist_records,
        code=code("aggregate"),
    output:
        csv="results/summary.csv",
        json="results/summary.json",
    params:
        ranking=RANKING,
        top_k=canonical(config["top_k"]),
        lifecycle=canonical(config.get("lifecycle", {})),
    log:
        "logs/aggregate.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/aggregate.py"


rule report:
    input:
        summary="results/summary.json",
        template=f"{workflow.basedir}/report/report.html.j2",
        style=f"{workflow.basedir}/report/style.css",
        code=code("report"),
    output:
        html="results/report.html",
        pdf="results/report.pdf",
    params:
        # a function: a plain string would have its {braces} (a text-pairs prompt's {input}) read as wildcards
        config=lambda wildcards: canonical(config),
        image=IMAGE,
    log:
        "logs/report.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/report.py"


# Local: a few reads of small JSON files, and its `run incomplete` lines belong in the submitting terminal, not in a
# cluster job's log.
localrules:
    run_status,


rule run_status:
    input:
        evaluations=eval_records,
        trainings=train_records,
        probes=noise_probe_records,
        finalists=finalist_records,
        report="results/report.pdf",
        code=code("run_status"),
    output:
        status="results/run_status.json",
    log:
        "logs/run_status.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/run_status.py"

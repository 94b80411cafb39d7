rule aggregate:
    input:
        evaluations=eval_records,
        trainings=train_records,
        selections=selection_records,
    output:
        csv="results/summary.csv",
        json="results/summary.json",
    params:
        w=config["w"],
        top_k=config["top_k"],
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
    output:
        html="results/report.html",
        pdf="results/report.pdf",
    params:
        config=config,
        w=config["w"],
        top_k=config["top_k"],
    log:
        "logs/report.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/report.py"

rule embedded_model:
    input:
        train="results/data/{dataset}/train.jsonl",
        code=code("build_model"),
    output:
        model=directory("results/models/{dataset}/{model}/base"),
        record="results/models/{dataset}/{model}/pretrain.json",
    params:
        model=model_param,
        energy=ENERGY,
        software=SOFTWARE,
        image=IMAGE,
    cache: True
    threads: workflow.cores
    resources:
        energy_window=ENERGY_WINDOW,
        gpu=GPUS_PER_JOB,
    log:
        "logs/models/{dataset}/{model}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/embedded_model.py"

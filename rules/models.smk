rule embedded_model:
    input:
        train="results/data/{dataset}/train.jsonl",
    output:
        model=directory("results/models/{dataset}/{model}/base"),
        record="results/models/{dataset}/{model}/pretrain.json",
    params:
        model=model_config,
        energy=config["energy"],
    threads: workflow.cores
    resources:
        energy_window=ENERGY_WINDOW,
    log:
        "logs/models/{dataset}/{model}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/embedded_model.py"

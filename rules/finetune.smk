rule finetune:
    input:
        train="results/data/{dataset}/train.jsonl",
        base=base_model_input,
    output:
        adapter=directory("results/finetune/{dataset}/{model}/b{bits}-e{epochs}/adapter"),
        record="results/finetune/{dataset}/{model}/b{bits}-e{epochs}/train.json",
    params:
        cell=cell_params,
        model=model_config,
        training=config["training"],
        energy=config["energy"],
    threads: 1
    resources:
        energy_window=ENERGY_WINDOW,
    log:
        "logs/finetune/{dataset}/{model}/b{bits}-e{epochs}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/finetune.py"

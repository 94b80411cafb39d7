rule evaluate:
    input:
        test="results/data/{dataset}/test.jsonl",
        base=base_model_input,
        adapter=adapter_input,
    output:
        record="results/eval/{dataset}/{model}/b{bits}-e{epochs}-{pruning}/eval.json",
        predictions="results/eval/{dataset}/{model}/b{bits}-e{epochs}-{pruning}/predictions.jsonl",
    params:
        cell=cell_params,
        model=model_config,
        pruning=lambda wildcards: vars(PRUNING[wildcards.pruning]),
        training=config["training"],
        generation=config["generation"],
        metrics=config["metrics"],
        energy=config["energy"],
    threads: 1
    resources:
        energy_window=ENERGY_WINDOW,
    log:
        "logs/eval/{dataset}/{model}/b{bits}-e{epochs}-{pruning}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/evaluate.py"

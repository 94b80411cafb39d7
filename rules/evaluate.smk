rule evaluate:
    input:
        test="results/data/{dataset}/test.jsonl",
        train="results/data/{dataset}/train.jsonl",
        base=base_model_input,
        adapter=adapter_input,
    output:
        record="results/eval/{dataset}/{model}/b{bits}-e{epochs}-{pruning}/eval.json",
        predictions="results/eval/{dataset}/{model}/b{bits}-e{epochs}-{pruning}/predictions.jsonl",
    params:
        cell=cell_params,
        model=model_config,
        pruning=pruning_params,
        calibration=config["pruning"].get("calibration", {}),
        sparse_kernels=config["pruning"].get("sparse_kernels", True),
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


checkpoint select_for_pruning:
    input:
        evaluations=unpruned_records,
        trainings=dataset_train_records,
    output:
        selection="results/selection/{dataset}.json",
    params:
        w=config["w"],
        top_k=config["top_k"],
    log:
        "logs/selection/{dataset}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/select_for_pruning.py"

rule evaluate:
    input:
        test="results/data/{dataset}/test.jsonl",
        train="results/data/{dataset}/train.jsonl",
        base=base_model_input,
        adapter=finetune_output("adapter"),
        training=finetune_output("train.json"),
        classes="results/data/{dataset}/class_centroids.json",
        code=code("evaluate"),
    output:
        record="results/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}/eval.json",
        predictions="results/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}/predictions.jsonl",
    params:
        cell=cell_param,
        model=model_param,
        pruning=pruning_param,
        early_exit=early_exit_param,
        training=training_param,
        generation=canonical(config["generation"]),
        metrics=canonical(config["metrics"]),
        energy=ENERGY,
        calibration=canonical(config["pruning"].get("calibration", {})),
        sparse_kernels=canonical(config["pruning"].get("sparse_kernels", True)),
        software=SOFTWARE,
    cache: True
    threads: 1
    resources:
        energy_window=ENERGY_WINDOW,
        gpu=GPUS_PER_JOB,
    log:
        "logs/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/evaluate.py"


rule class_centroids:
    input:
        train="results/data/{dataset}/train.jsonl",
        code=code("class_centroids"),
    output:
        classes="results/data/{dataset}/class_centroids.json",
    params:
        metrics=canonical(config["metrics"]),
        software=SOFTWARE,
    cache: True
    threads: 1
    log:
        "logs/data/{dataset}/class_centroids.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/class_centroids.py"


checkpoint select_for_pruning:
    input:
        evaluations=unpruned_records,
        trainings=dataset_train_records,
        code=code("select_for_pruning"),
    output:
        selection="results/selection/{dataset}.json",
    params:
        w=canonical(config["w"]),
        top_k=canonical(config["top_k"]),
    log:
        "logs/selection/{dataset}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/select_for_pruning.py"

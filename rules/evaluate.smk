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
        merge=merge_param,
        training=training_param,
        generation=canonical(config["generation"]),
        metrics=canonical(config["metrics"]),
        energy=ENERGY,
        calibration=canonical(config["pruning"].get("calibration", {})),
        sparse_kernels=canonical(config["pruning"].get("sparse_kernels", True)),
        software=SOFTWARE,
        image=IMAGE,
    cache: True
    threads: MEASURED_THREADS
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


# The same cell served by another inference backend (inference.backends): its own conversion, the same measurement.
use rule evaluate as evaluate_on_backend with:
    output:
        record="results/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}/{backend}/eval.json",
        predictions="results/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}/{backend}/predictions.jsonl",
    log:
        "logs/eval/{dataset}/{model}/{training}/b{bits}-e{epochs}-{pruning}/{backend}.log",
    cache: True  # `use rule` does not carry it over


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
    resources:
        energy_window=ENERGY_WINDOW,  # a minute of embedding on the CPU: not beside a measured window
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
        ranking=RANKING,
        top_k=canonical(config["top_k"]),
    log:
        "logs/selection/{dataset}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/select_for_pruning.py"


# The run's noise floor: the reference cell re-measured NOISE_PROBES times, spread over the run (see probe_after).
rule probe_reference:
    input:
        test="results/data/{dataset}/test.jsonl",
        base=base_model_input,
        after=probe_after,
        code=code("probe_reference"),
    output:
        record="results/probes/{dataset}/{model}/{index}/probe.json",
    params:
        cell=lambda w: canonical({"dataset": w.dataset, "model": w.model, "bits": int(config["reference_bits"]),
                                  "epochs": 0, "training": grid.REFERENCE_TRAINING.id, "pruning": "none"}),
        model=model_param,
        # the base model at every bit width of the grid (each runs other kernels), the reference's first
        trainings=lambda w: canonical({str(bits): grid.training_for(config, bits, 0)
                                       for bits in sorted({int(config["reference_bits"]), *config["bits"]})}),
        generation=canonical(config["generation"]),
        energy=ENERGY,
        software=SOFTWARE,
        image=IMAGE,
    threads: MEASURED_THREADS
    resources:
        energy_window=ENERGY_WINDOW,
        gpu=GPUS_PER_JOB,
    log:
        "logs/probes/{dataset}/{model}/{index}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/probe_reference.py"


# The finalists of a dataset (the final ranking's top k, the base model, the baseline, the at-a-glance picks)
# re-measured side by side in one job, interleaved in rounds.
rule finalists:
    input:
        evaluations=dataset_eval_records,
        trainings=dataset_train_records,
        adapters=dataset_adapters,
        bases=dataset_base_models,
        test="results/data/{dataset}/test.jsonl",
        train="results/data/{dataset}/train.jsonl",
        code=code("measure_finalists"),
    output:
        record="results/finalists/{dataset}/finalists.json",
    params:
        config=lambda w: canonical({key: config[key] for key in config if key != "datasets"}),
        energy=ENERGY,
        software=SOFTWARE,
        image=IMAGE,
    threads: MEASURED_THREADS
    resources:
        energy_window=ENERGY_WINDOW,
        gpu=GPUS_PER_JOB,
    log:
        "logs/finalists/{dataset}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/finalists.py"

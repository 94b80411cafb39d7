rule finetune:
    input:
        train="results/data/{dataset}/train.jsonl",
        base=base_model_input,
        code=code("finetune"),
    output:
        adapter=directory("results/finetune/{dataset}/{model}/{training}/b{bits}-e{epochs}/adapter"),
        record="results/finetune/{dataset}/{model}/{training}/b{bits}-e{epochs}/train.json",
    params:
        cell=cell_param,
        model=model_param,
        training=training_param,
        variant=variant_param,
        energy=ENERGY,
        software=SOFTWARE,
        image=IMAGE,
        checkpoint=lambda w: canonical(f"checkpoints/{w.dataset}/{w.model}/{w.training}/b{w.bits}-e{w.epochs}.pt"),
    cache: True
    threads: MEASURED_THREADS
    resources:
        energy_window=ENERGY_WINDOW,
        gpu=GPUS_PER_JOB,
    log:
        "logs/finetune/{dataset}/{model}/{training}/b{bits}-e{epochs}.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/finetune.py"

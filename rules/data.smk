rule rca_tickets:
    input:
        code=code("make_rca_tickets"),
    output:
        tickets="results/data/{dataset}/tickets.jsonl",
    params:
        dataset=dataset_param,
    log:
        "logs/data/{dataset}/tickets.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/rca_tickets.py"


rule prepare_data:
    input:
        unpack(generated_inputs),
        code=code("prepare_data"),
    output:
        train="results/data/{dataset}/train.jsonl",
        validation="results/data/{dataset}/validation.jsonl",
        test="results/data/{dataset}/test.jsonl",
    params:
        dataset=dataset_param,
    log:
        "logs/data/{dataset}/prepare.log",
    conda:
        "../envs/joulebench.yaml"
    container:
        CONTAINER
    script:
        "../scripts/prepare_data.py"

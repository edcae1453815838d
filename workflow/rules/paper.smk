# The paper's numbers beside ours for the whole zoo: one table from every stage's summary.


rule paper_table:
    input:
        **PAPER_INPUTS,
    output:
        **reported(
            layout.zoo_outputs("paper_table", RESULTS, ZOO_NAME),
            category="Zoo",
            subcategory=None,
            captions={"html": "paper_table.rst"},
        ),
    params:
        models=ZOO,
    log:
        layout.zoo_log("paper_table", RESULTS, ZOO_NAME),
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/paper_table.py"


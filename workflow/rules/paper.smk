# The paper's numbers beside ours for the whole zoo: one table from every stage's summary.


rule paper_table:
    input:
        paper_table_inputs,
    output:
        csv=f"{ZOO_DIR}/paper_vs_ours.csv",
        html=report(
            f"{ZOO_DIR}/paper_vs_ours.html",
            caption="../report/paper_table.rst",
            category="Zoo",
        ),
    params:
        models=ZOO,
        stages=PAPER_STAGES,
    log:
        f"{RESULTS}/logs/{ZOO_NAME}/paper_table.log",
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/paper_table.py"


ZOO_TARGETS += [f"{ZOO_DIR}/paper_vs_ours.csv", f"{ZOO_DIR}/paper_vs_ours.html"]

include { shellQuote; extOptions; stubVersions } from '../functions'

// One task per learned baseline of --train_baselines (tssc-train-baseline --model).
process TRAIN_BASELINE {
    tag "${model}"
    label 'process_high'
    label 'process_long'
    label 'process_gpu'

    input:
    path volumes, stageAs: 'prepared/*'
    path records, stageAs: 'prepared/*'
    val model

    output:
    path "baselines/${model}/checkpoint", type: 'dir', emit: checkpoint
    path "baselines/${model}/log.csv"                , emit: log
    path 'versions.yml'                               , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-train-baseline \\
        --data prepared \\
        --out ${shellQuote("baselines/${model}")} \\
        --model ${shellQuote(model)} \\
        --no-progress \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote("baselines/${model}/checkpoint")}
    touch ${shellQuote("baselines/${model}/checkpoint/config.json")} ${shellQuote("baselines/${model}/log.csv")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

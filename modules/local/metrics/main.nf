include { shellQuote; extOptions; stubVersions } from '../functions'

process METRICS {
    tag "${meta.id}:${meta.method}"
    label 'process_low'

    input:
    tuple val(meta), path(prediction, stageAs: 'prediction/*'), path(truth, stageAs: 'truth/*'), path(record)

    output:
    tuple val(meta), path("metrics/${meta.id}.${meta.method}.frames.csv") , emit: frames
    tuple val(meta), path("metrics/${meta.id}.${meta.method}.metrics.csv"), emit: metrics
    path 'versions.yml'                                                        , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-metrics \\
        --prediction ${shellQuote(prediction)} \\
        --truth ${shellQuote(truth)} \\
        --record ${shellQuote(record)} \\
        --method ${shellQuote(meta.method)} \\
        --out metrics \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p metrics
    touch ${shellQuote("metrics/${meta.id}.${meta.method}.frames.csv")} ${shellQuote("metrics/${meta.id}.${meta.method}.metrics.csv")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

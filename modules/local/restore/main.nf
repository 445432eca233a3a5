include { shellQuote; stubVersions } from '../functions'

process RESTORE {
    tag "${meta.id}:${meta.method}"
    label 'process_low'

    input:
    tuple val(meta), path(filled, stageAs: 'filled/*'), path(record)

    output:
    tuple val(meta), path("${meta.method}/${meta.id}${meta.suffix}"), emit: restored
    path 'versions.yml'                                                  , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    tssc-restore \\
        --filled ${shellQuote(filled)} \\
        --record ${shellQuote(record)} \\
        --out ${shellQuote("${meta.method}/${meta.id}${meta.suffix}")} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.method)}
    touch ${shellQuote("${meta.method}/${meta.id}${meta.suffix}")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

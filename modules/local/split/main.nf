include { shellQuote; extOptions; stubVersions } from '../functions'

process SPLIT {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(prepared), path(record)

    output:
    tuple val(meta), path('chunks/*.npz'), emit: chunks
    path 'versions.yml'                  , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-split \\
        --prepared ${shellQuote(prepared)} \\
        --record ${shellQuote(record)} \\
        --out chunks \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p chunks
    touch ${shellQuote("chunks/${meta.id}.chunk000.npz")} ${shellQuote("chunks/${meta.id}.chunk001.npz")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

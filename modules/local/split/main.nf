include { shellQuote; optionArg } from '../functions'

process SPLIT {
    tag "${meta.subject}"
    label 'process_single'

    input:
    tuple val(meta), path(prepared), path(record)

    output:
    tuple val(meta), path('chunks/*.npz'), emit: chunks
    path 'versions.yml'                  , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-split \\
        --prepared ${shellQuote(prepared)} \\
        --record ${shellQuote(record)} \\
        --out chunks \\
        ${optionArg('--chunk-size', params.chunk_size)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p chunks
    touch ${shellQuote("chunks/${meta.subject}.chunk000.npz")} ${shellQuote("chunks/${meta.subject}.chunk001.npz")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """
}

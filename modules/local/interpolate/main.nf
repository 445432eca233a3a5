include { shellQuote; optionArgs; extOptions; stubVersions } from '../functions'

// One task per chunk and method; meta.method comes from --methods, never from a list here.
// Every checkpoint of the run is handed over; the method takes the one of its kind.
process INTERPOLATE {
    tag "${meta.id}:${meta.method}:${chunk.baseName}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(chunk, stageAs: 'chunk/*')
    path checkpoints, stageAs: 'checkpoints/*/*'  // checkpoint/ folders, each in its own folder

    output:
    tuple val(meta), path("filled/${chunk.baseName}.npz"), emit: filled
    path 'versions.yml'                          , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-interpolate \\
        --chunk ${shellQuote(chunk)} \\
        --method ${shellQuote(meta.method)} \\
        --out ${shellQuote("filled/${chunk.baseName}.npz")} \\
        ${optionArgs('--checkpoint', checkpoints)} \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p filled
    touch ${shellQuote("filled/${chunk.baseName}.npz")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

include { shellQuote; optionArg; optionArgs } from '../functions'

// One task per chunk and method; meta.method comes from --methods, never from a list here.
// Every checkpoint of the run is handed over; the method takes the one of its kind.
process INTERPOLATE {
    tag "${meta.subject}:${meta.method}:${chunk.baseName}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(chunk, stageAs: 'chunk/*')
    path checkpoints, stageAs: 'checkpoints/*/*'  // checkpoint/ folders, each in its own folder

    output:
    tuple val(meta), path("filled/${chunk.name}"), emit: filled
    path 'versions.yml'                          , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-interpolate \\
        --chunk ${shellQuote(chunk)} \\
        --method ${shellQuote(meta.method)} \\
        --out ${shellQuote("filled/${chunk.name}")} \\
        ${optionArgs('--checkpoint', checkpoints)} \\
        ${optionArg('--steps', params.steps)} \\
        ${optionArg('--eta', params.eta)} \\
        ${optionArg('--seed', params.seed)} \\
        ${optionArg('--device', params.device)} \\
        ${optionArg('--batch-size', params.batch_size)} \\
        ${optionArg('--samples', params.samples)} \\
        ${optionArg('--flips', params.flips)} \\
        ${optionArg('--weights', params.weights)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """

    stub:
    """
    mkdir -p filled
    touch ${shellQuote("filled/${chunk.name}")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """
}

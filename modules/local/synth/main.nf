include { shellQuote; optionArg } from '../functions'

process SYNTH {
    tag "${meta.id}"
    label 'process_single'

    input:
    val meta

    output:
    tuple val(meta), path("${meta.id}", type: 'dir'), emit: cohort
    path 'versions.yml'                                , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-synth \\
        --out ${shellQuote(meta.id)} \\
        --seed ${shellQuote(meta.seed)} \\
        ${optionArg('--kind', params.synth_kind)} \\
        ${optionArg('--subjects', params.synth_subjects)} \\
        ${optionArg('--size', params.synth_size)} \\
        ${optionArg('--depth', params.synth_depth)} \\
        ${optionArg('--frames', params.synth_frames)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.id)}
    touch ${shellQuote("${meta.id}/stub_000.nii.gz")} ${shellQuote("${meta.id}/stub_001.nii.gz")}
    printf 'subject,scan\\nstub_000,stub_000.nii.gz\\nstub_001,stub_001.nii.gz\\n' > ${shellQuote("${meta.id}/samplesheet.csv")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """
}

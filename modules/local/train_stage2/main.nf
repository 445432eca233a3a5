include { shellQuote; extOptions; stubVersions } from '../functions'

process TRAIN_STAGE2 {
    tag 'stage2'
    label 'process_high'
    label 'process_long'
    label 'process_gpu'

    input:
    path volumes, stageAs: 'prepared/*'
    path records, stageAs: 'prepared/*'
    path stage1_outputs, stageAs: 'stage1_outputs/*'

    output:
    path 'stage2/checkpoint', type: 'dir', emit: checkpoint
    path 'stage2/log.csv'                , emit: log
    path 'versions.yml'                  , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-train-stage2 \\
        --data prepared \\
        --stage1-outputs stage1_outputs \\
        --out stage2 \\
        --no-progress \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p stage2/checkpoint
    touch stage2/checkpoint/config.json stage2/log.csv

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}

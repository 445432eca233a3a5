include { shellQuote; optionArg } from '../functions'

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
    path 'versions.yml'                  , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-train-stage2 \\
        --data prepared \\
        --stage1-outputs stage1_outputs \\
        --out stage2 \\
        --no-progress \\
        ${optionArg('--preset', params.train_stage2_preset)} \\
        ${optionArg('--steps', params.train_stage2_steps)} \\
        ${optionArg('--batch-size', params.train_stage2_batch_size)} \\
        ${optionArg('--lr', params.train_stage2_lr)} \\
        ${optionArg('--crop', params.train_stage2_crop)} \\
        ${optionArg('--val-subjects', params.train_stage2_val_subjects)} \\
        ${optionArg('--val-every', params.train_stage2_val_every)} \\
        ${optionArg('--checkpoint-every', params.train_stage2_checkpoint_every)} \\
        ${optionArg('--seed', params.train_stage2_seed)} \\
        ${optionArg('--backend', params.backend)} \\
        ${optionArg('--device', params.device)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """

    stub:
    """
    mkdir -p stage2/checkpoint
    touch stage2/checkpoint/config.json stage2/log.csv

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """
}

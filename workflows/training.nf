/*
 * --mode train (or --train_input): PREPARE -> TRAIN_STAGE1 -> stage-1 inference on the
 * training subjects -> TRAIN_STAGE2, and TRAIN_BASELINE for each of --train_baselines.
 * Training subjects are prepared in evaluate mode, the mode every training reads.
 */

include { PREPARE        } from '../modules/local/prepare'
include { TRAIN_STAGE1   } from '../modules/local/train_stage1'
include { TRAIN_STAGE2   } from '../modules/local/train_stage2'
include { TRAIN_BASELINE } from '../modules/local/train_baseline'
include { FILL           } from '../subworkflows/local/fill'

workflow TRAINING {
    take:
    ch_scans   // [ meta, scan ]
    baselines  // learned baselines to train (list of tssc-train-baseline --model names)

    main:
    ch_versions = channel.empty()

    PREPARE(ch_scans)
    ch_versions = ch_versions.mix(PREPARE.out.versions)
    ch_volumes = PREPARE.out.prepared.map { meta, volume, record -> volume }.collect()
    ch_records = PREPARE.out.prepared.map { meta, volume, record -> record }.collect()

    TRAIN_STAGE1(ch_volumes, ch_records)
    ch_versions = ch_versions.mix(TRAIN_STAGE1.out.versions)

    TRAIN_BASELINE(ch_volumes, ch_records, channel.fromList(baselines))
    ch_versions = ch_versions.mix(TRAIN_BASELINE.out.versions)

    ch_refine_checkpoint = channel.empty()
    if (!params.skip_refine) {
        FILL(PREPARE.out.prepared, [params.refine_method], TRAIN_STAGE1.out.checkpoint)
        ch_versions = ch_versions.mix(FILL.out.versions)
        TRAIN_STAGE2(ch_volumes, ch_records, FILL.out.filled.map { meta, filled, record -> filled }.collect())
        ch_versions = ch_versions.mix(TRAIN_STAGE2.out.versions)
        ch_refine_checkpoint = TRAIN_STAGE2.out.checkpoint
    }

    emit:
    checkpoints       = TRAIN_STAGE1.out.checkpoint.mix(TRAIN_BASELINE.out.checkpoint)  // checkpoint/ folders: stage 1 and each baseline
    refine_checkpoint = ch_refine_checkpoint  // stage-2 checkpoint folder (none with --skip_refine)
    versions          = ch_versions
}
